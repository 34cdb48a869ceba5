"""regimes"""
