"""Turning a drop folder into table rows: listing, no-follow reads (hashed as read), probing."""
