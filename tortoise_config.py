"""``TORTOISE_ORM``: the config aerich reads, built from the ``CHATSTORE_*`` settings."""

from store.migrate import tortoise_config
from store.settings import Settings

TORTOISE_ORM = tortoise_config(Settings(), with_aerich=True)
