"""Tortoise models: the three tables and their keys. Nothing outside ``store`` imports this.

Every foreign key is ``ON DELETE CASCADE`` in the DDL itself, so deleting a user or a
conversation with plain SQL (an operator's ``psql`` session included) leaves no orphans.
Index objects name *columns* (``conversation_id``): Tortoise copies them into the DDL as given.
"""

from __future__ import annotations

from typing import Any

from tortoise import fields
from tortoise.indexes import Index
from tortoise.models import Model

from store.contract import MAX_CONVERSATION_KEY_CHARS, MAX_IDEMPOTENCY_KEY_CHARS, MAX_USER_CHARS


class User(Model):
    """One authenticated subject: a JWT ``sub`` or a stdio user name, stored verbatim."""

    id = fields.CharField(primary_key=True, max_length=MAX_USER_CHARS)
    created_at = fields.DatetimeField(auto_now_add=True)

    class Meta:
        table = "users"


class Conversation(Model):
    id = fields.UUIDField(primary_key=True)
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="conversations", on_delete=fields.CASCADE, db_index=False
    )
    title = fields.TextField(null=True)
    metadata: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    created_at = fields.DatetimeField()
    updated_at = fields.DatetimeField()
    message_count = fields.BigIntField(default=0)
    last_seq = fields.BigIntField(default=0)
    # The summary covers messages 1 … summary_up_to_seq; its token count is kept beside it
    # so get_context never tokenizes it again.
    summary = fields.TextField(null=True)
    summary_up_to_seq = fields.BigIntField(null=True)
    summary_token_count = fields.IntField(null=True)
    # The sum of the messages' token counts, moved with every append: get_context sizes its
    # first read from it (tokens per message). A hint only: results never depend on it.
    token_total = fields.BigIntField(default=0)
    # A fork: the conversation and seq it was copied from. SET NULL: deleting the parent
    # never deletes the fork (forked_from then reads null).
    forked_from: fields.ForeignKeyNullableRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation",
        related_name="forks",
        null=True,
        on_delete=fields.SET_NULL,
        db_index=False,
    )
    forked_from_seq = fields.BigIntField(null=True)
    # A caller-chosen name, unique per user (NULL keys never collide): creating with a key
    # the user has returns that conversation.
    key = fields.CharField(max_length=MAX_CONVERSATION_KEY_CHARS, null=True)

    class Meta:
        table = "conversations"
        # list_conversations: WHERE user_id = ? ORDER BY updated_at DESC, id DESC (keyset).
        # It also serves user-scoped lookups and the cascade from users.
        unique_together = (("user", "key"),)
        indexes = (Index(fields=("user_id", "updated_at", "id"), name="conversations_user_recent"),)


class Message(Model):
    id = fields.UUIDField(primary_key=True)
    conversation: fields.ForeignKeyRelation[Conversation] = fields.ForeignKeyField(
        "models.Conversation", related_name="messages", on_delete=fields.CASCADE, db_index=False
    )
    user: fields.ForeignKeyRelation[User] = fields.ForeignKeyField(
        "models.User", related_name="messages", on_delete=fields.CASCADE, db_index=False
    )
    seq = fields.BigIntField()
    role = fields.CharField(max_length=16)
    content = fields.TextField()
    tool_calls: fields.JSONField[list[dict[str, Any]] | None] = fields.JSONField(null=True)
    tool_call_id = fields.TextField(null=True)
    metadata: fields.JSONField[dict[str, Any]] = fields.JSONField(default=dict)
    idempotency_key = fields.CharField(max_length=MAX_IDEMPOTENCY_KEY_CHARS, null=True)
    created_at = fields.DatetimeField()
    token_count = fields.IntField()
    # A framework's own form of the message (an OpenAI Responses item, a LangChain message
    # dict), kept verbatim and never interpreted: on PostgreSQL the migration makes it json,
    # not jsonb, which would reorder keys and rewrite numbers (1e23, -0.0). The column is
    # "raw" (Model.raw is taken).
    raw_json: fields.JSONField[dict[str, Any] | None] = fields.JSONField(
        null=True, source_field="raw"
    )

    class Meta:
        table = "messages"
        # (conversation_id, seq) is both the gapless-seq guard and the keyset pagination
        # index; (conversation_id, idempotency_key) makes replays find the first message
        # (NULL keys never collide). user_id is indexed for the cascade when a user is purged.
        # The migrations also create what Tortoise models cannot declare: messages_system, a
        # partial index on (conversation_id, seq) WHERE role = 'system', for get_context's
        # system messages older than the cut; and full-text search: on PostgreSQL a stored
        # generated tsvector column (search) with a GIN index, on SQLite an FTS5 table
        # (messages_fts) kept in step by triggers.
        unique_together = (("conversation", "seq"), ("conversation", "idempotency_key"))
        indexes = (Index(fields=("user_id",), name="messages_user"),)
