"""Context windows: a token count on every message (existing ones counted here), a summary on
conversations, and a partial index for get_context's older system messages."""

import json

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True

#: Messages counted per round trip while backfilling token_count.
BATCH = 500


async def upgrade(db: BaseDBAsyncClient) -> str:
    await db.execute_script(
        """
        ALTER TABLE "conversations" ADD "summary" TEXT;
        ALTER TABLE "conversations" ADD "summary_up_to_seq" BIGINT;
        ALTER TABLE "conversations" ADD "summary_token_count" INT;
        ALTER TABLE "messages" ADD "token_count" INT NOT NULL DEFAULT 0;"""
    )
    await _count_existing_messages(db)
    return """
        ALTER TABLE "messages" ALTER COLUMN "token_count" DROP DEFAULT;
        CREATE INDEX "messages_system" ON "messages" ("conversation_id", "seq")
            WHERE "role" = 'system';"""


async def _count_existing_messages(db: BaseDBAsyncClient) -> None:
    """Every stored message gets the count the store would have given it (its content and
    tool_calls, with the tokenizer of the settings being migrated), a batch at a time by id."""
    from store.migrate import upgrading
    from store.tokens import tokenizer

    counter = tokenizer(upgrading().tokenizer)
    rows = await db.execute_query_dict(
        "SELECT id, content, tool_calls FROM messages ORDER BY id LIMIT $1", [BATCH]
    )
    while rows:
        counts = []
        for row in rows:
            calls = row["tool_calls"]
            calls = json.loads(calls) if isinstance(calls, str) else calls
            counts.append([counter.count_message(row["content"], calls), row["id"]])
        await db.execute_many("UPDATE messages SET token_count = $1 WHERE id = $2", counts)
        rows = await db.execute_query_dict(
            "SELECT id, content, tool_calls FROM messages WHERE id > $1 ORDER BY id LIMIT $2",
            [rows[-1]["id"], BATCH],
        )


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "messages_system";
        ALTER TABLE "conversations" DROP COLUMN "summary_up_to_seq";
        ALTER TABLE "conversations" DROP COLUMN "summary";
        ALTER TABLE "conversations" DROP COLUMN "summary_token_count";
        ALTER TABLE "messages" DROP COLUMN "token_count";"""

MODELS_STATE = (
    "eJztW21z2jgQ/isef+rN5DJAXq/TuRmSkJa2gZuEXDvtdBRhK6CLLRFbvoTJ8d8rCb/KMs"
    "EUCOH8JcG7Wll6VtLuPoIn06U2cvzdU0r+RZ4PGabEfGs8mQS6iH/Q6ncME45GiVYIGOw7"
    "0sBKtZQa2PeZBy3GlbfQ8REX2ci3PDwKX0YCxxFCavGGmAwSUUDwfYAAowPEhsjjiu8/uB"
    "gTGz0iXzw+mbcYObb8bAY+8gC2xUuDkQ0ZsgFk4onLhB16HHnI9+XAwq6iaWZGDWRHHrIQ"
    "keZsPJKNTNkHn4x8mAj70R2QA8hgNh2ClIPI9vq6fXYuW4qp9oFFncAlSevRmA0piZsHAb"
    "Z3hY3QDRBBnphOCkKBUAh5JJqixQXMC1AMk50IbHQLA0c4wnx3GxBLTNaQbxJ/9v8Mh5Zq"
    "BkCn2wNXrR4AZgm/cTSFzzFhAuinybTfBBApNcULTj80L9/sHf4mIaA+G3hSKeEyJ9IQMg"
    "gSJycoM8z49HNA97iH9EDHBgrWfKhzoBxiGIMcNUlQTlZ3hF+E0Hox7bW+9kTPru/fO0LQ"
    "+bt5KYG+aH6VSLvjUPO523kfNad8k063cOf0c/dEop86BxCDwhV5wD9edTt6wNM2CuY2tp"
    "jxn+Fgny2ywucBP7XG+wF2GCb+rnjtSyxzgdFsl6joK/tBdKC6xPJQ6ozLOuWMaxh2kd4x"
    "WUvVNaHpbvRhVQ56od3Rvmhd9ZoXf2X8cdbstYSmkdkekfTNoeKjuBPjS7v3wRCPxrdup6"
    "W6LW7X+2aKMcGAUUDoA4B2GpNIHIkybs6GsjJuzlpWbt5oN7s8M4EDxN0XEI2nT/CgTQoC"
    "W85UcTUmKztkayvyLB8s//f7H43G3t5Ro7Z3eHywf3R0cFw75m3lcPOqoxnL4aT9vt1Rwp"
    "wQZE9UB/oM+Oi+HPxpqwr5xZD3A9eF3rhMOpcyqRK68gldCB8IRry+Kr/oteYLrf4N88OL"
    "rn+O5R0iRTHgWWco1lvkjkZ9/2j/eO9wP/ZCLJkFfh7oFEeQBfd0CL2CNCoxWeig2bSsyX"
    "ThI3AQGbChwPHgYAaA0UHDW6llSqhqTHUTSYfc3mlLdYFgHvFz6iE8IJ/QWOLe5oOExNJV"
    "6CEJdR1288rwnkQLKpImu8yDDzF/lF5nfO58xohNV2bz6rR51poSTn1o3T1AzwYFUIe5oK"
    "85zUPL80+XyImJPD3SF9NetghsCR5t0BRoGTjzKrfhqhJIOCh2+G7xJgUuDXGaQrKYM007"
    "bbl06fcMsyn6F6GaTyavwDZyR5QhYo3BHRqbP+ahWp+hVaOJgegEqKjUTaRSy2d/6652ti"
    "7h86iOvC5OQqL2W5iB1A/nSEDqKjeT5B9CpTCjlDCky6CLq8mUyVZAvO5yklHqAAs6jibz"
    "KL4hyFr90h3BhtUt674MiJHUFjczLsUUu4pKqe7GtmA7qMlsiUirMd2GTaFU/bXaPFV/rV"
    "Zc9QtddSH5P7ypWoyjXAY3uWleXTY5mS7JtXG8uPTVmC6zDt7c7fNs2Vtxvy/K/ao00y9y"
    "wOoXEV8Z/vNywZrtrOeE1fVd0ewrpNlXySFL1DUEcuSNYvZYTGg+6tjsEmTw2D5EhGFLuN"
    "bwg/4/yGJvDWh8/NIzbm644ObGoB4X+MzG1BDdG2JQO1zA15Jt8JXZ5yvT3TUVx6yi/+e/"
    "A1yKPJ6V9y/vlH+eNn59Z/zODAK5yvyLvcEnaHeJMw5XwSupBMIFmysEcpF+nkvJ3G8CFr"
    "+Z3NL4r/sqYHWHu8473CbysDXUReBQMzMGw6TNKn/uUirUFZbi2kinqcDDM2BzA91Syu/i"
    "qCYOGm3VUpxEpEyqenFWLpGgLDZVCYTD5luIbn0uTrY+g5OtazjZoqvQ4quJ4qvQNdxMvP"
    "IruRLp0fKD2eQnKH6FJw=="
)
