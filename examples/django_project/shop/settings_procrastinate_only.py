"""The same project before it added Chimeway's Django app: Procrastinate's schema is
Django's; `manage.py chimeway migrate` then adds Chimeway's tables beside it."""

from shop.settings import *  # noqa: F403

INSTALLED_APPS = [app for app in INSTALLED_APPS if app != "chimeway.contrib.django"]  # noqa: F405
