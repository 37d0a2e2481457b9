"""
A real Django application for the bench's heavy-application case: what a
replacement costs when importing the application is not free.
"""
