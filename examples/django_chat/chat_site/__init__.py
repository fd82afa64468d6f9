"""A minimal Django site that stores chat turns with pikku-pg on Django's own connection."""
