"""aerich migrations, one set per SQL dialect (postgres/, sqlite/), generated from store.models."""
