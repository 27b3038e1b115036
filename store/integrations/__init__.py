"""Framework adapters: a framework's own session/history interface on a chatstore store.

Each lives in its own module and imports its framework only there, so ``import store`` works
without them installed (``pip install 'chatstore[agents]'`` or ``'chatstore[langchain]'``).
"""
