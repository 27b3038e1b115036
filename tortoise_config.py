"""``TORTOISE_ORM``: the config aerich reads, built from the ``CHATSTORE_*`` settings."""

from store.settings import Settings, tortoise_config

TORTOISE_ORM = tortoise_config(Settings(), with_aerich=True)
