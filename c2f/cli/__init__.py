"""c2f.cli"""
