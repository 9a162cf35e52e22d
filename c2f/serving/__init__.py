"""c2f.serving"""
