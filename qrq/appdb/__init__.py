"""The app database: users and templates (peewee, deferred init)."""
