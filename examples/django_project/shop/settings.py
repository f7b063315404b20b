"""A Django project on Procrastinate's Django integration, with Chimeway beside it.

``procrastinate.contrib.django`` owns Procrastinate's schema; ``chimeway.contrib.django``
(listed after it) applies only Chimeway's migrations, in ``manage.py migrate``, for test
databases too."""

import os

from psycopg.conninfo import conninfo_to_dict

_db = conninfo_to_dict(os.environ["CHIMEWAY_DATABASE_URL"])

SECRET_KEY = "example-only"
DEBUG = False
USE_TZ = True
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"
INSTALLED_APPS = [
    "django.contrib.contenttypes",
    "procrastinate.contrib.django",
    "chimeway.contrib.django",
    "shop",
]
DATABASES = {
    "default": {
        "ENGINE": "django.db.backends.postgresql",
        "NAME": _db.get("dbname", "postgres"),
        "USER": _db.get("user", ""),
        "PASSWORD": _db.get("password", ""),
        "HOST": _db.get("host", ""),
        "PORT": _db.get("port", ""),
        # Django's test database: "test_" + NAME on the same server.
    }
}
#: What `manage.py chimeway worker` (and the other commands taking --app) runs.
CHIMEWAY_APP = "shop.notifications:get_cw"
