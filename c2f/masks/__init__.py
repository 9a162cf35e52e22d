"""c2f.masks"""
