"""hubsync"""
