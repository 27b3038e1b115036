"""chatstore's data layer: durable, per-user conversation history on PostgreSQL or SQLite.

The public surface is re-exported here; the ORM models never leave this package.
"""

from store.contract import Limits, Role
from store.errors import (
    BadImportLine,
    Conflict,
    InvalidArgument,
    LimitExceeded,
    NotFound,
    SchemaBehind,
    StoreError,
    Unavailable,
)
from store.schemas import (
    Context,
    Conversation,
    ConversationPage,
    ConversationWithMessages,
    DeletedConversation,
    ForkedFrom,
    Imported,
    Message,
    MessagePage,
    PurgedUser,
    SearchHit,
    SearchPage,
)
from store.settings import Settings
from store.store import ConversationStore, open_store

__all__ = [
    "BadImportLine",
    "Conflict",
    "Context",
    "Conversation",
    "ConversationPage",
    "ConversationStore",
    "ConversationWithMessages",
    "DeletedConversation",
    "ForkedFrom",
    "Imported",
    "InvalidArgument",
    "LimitExceeded",
    "Limits",
    "Message",
    "MessagePage",
    "NotFound",
    "PurgedUser",
    "Role",
    "SchemaBehind",
    "SearchHit",
    "SearchPage",
    "Settings",
    "StoreError",
    "Unavailable",
    "open_store",
]
