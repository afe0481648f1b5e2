"""The plug-ins of docs/extending.md: an installable package of your own, outside ladarun."""
