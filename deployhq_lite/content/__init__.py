"""The Contentstack model: documents of a stack published to environments, releases and
their rollbacks.

``documents`` reads a stack's entries and assets from git; ``publish`` applies publish
and unpublish changes to an environment as one deployment; ``releases`` holds release
rules (who may see, deploy, roll back, delete); ``schedule`` runs releases set for later.
"""
