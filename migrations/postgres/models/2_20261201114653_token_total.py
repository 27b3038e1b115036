"""conversations.token_total: the sum of the messages' token counts, get_context's hint for
sizing its first read; the conversations already stored get theirs here."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "conversations" ADD "token_total" BIGINT NOT NULL DEFAULT 0;
        UPDATE "conversations" SET "token_total" = (
            SELECT coalesce(sum("token_count"), 0) FROM "messages"
            WHERE "messages"."conversation_id" = "conversations"."id"
        );"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "conversations" DROP COLUMN "token_total";"""


MODELS_STATE = (
    "eJztW21z2jgQ/isef+rN5DJAXq/TuRmSkJa2gZuEXDvtdBRhK6CLLRFbvoTJ8d8rCb/KMs"
    "EUCOH8JcG7Wll6diXtPoIn06U2cvzdU0r+RZ4PGabEfGs8mQS6iH/Q6ncME45GiVYIGOw7"
    "0sBKtZQa2PeZBy3GlbfQ8REX2ci3PDwKX0YCxxFCavGGmAwSUUDwfYAAowPEhsjjiu8/uB"
    "gTGz0iXzw+mbcYObb8bAY+8gC2xUuDkQ0ZsgFk4onLhB16HHnI9+XAwq6iaWZGDWRHHrIQ"
    "keZsPJKNTNkHn4x8mAj70R2QA8hgNh2ClIPI9vq6fXYuW4qp9oFFncAlSevRmA0piZsHAb"
    "Z3hY3QDRBBnphOCkKBUAh5JJqixQXMC1AMk50IbHQLA0c4wnx3GxBLTNaQbxJ/9v8Mh5Zq"
    "BkCn2wNXrR4AZgm/cTSFzzFhAuinybTfBBApNcULTj80L9/sHf4mIaA+G3hSKeEyJ9IQMg"
    "gSJycoM8z49HNA97iH9EDHBgrWfKhzoBxiGIMcNUlQTqI7wi9CaL2Y9lpfe6Jn1/fvHSHo"
    "/N28lEBfNL9KpN1xqPnc7byPmlO+SKdLuHP6uXsi0U/tA4hB4Yo84B+vuh094GkbBXMbW8"
    "z4z3CwzxaJ8HnAT8V4P8AOw8TfFa99iTAXGM12iYq+sh5EB6pLLA+l9risU864hmEX6R2T"
    "tVRdE5ruRh9W5aAXWh3ti9ZVr3nxV8YfZ81eS2gameURSd8cKj6KOzG+tHsfDPFofOt2Wq"
    "rb4na9b6YYEwwYBYQ+AGinMYnEkSjj5uxRVsbNWcvKzRvtZpdnJnCAuPsCovH0CR60ScHB"
    "ljNVXI3JyjbZ2oo8ywfL//3+R6Oxt3fUqO0dHh/sHx0dHNeOeVs53LzqaEY4nLTftzvKMS"
    "cE2R3VgT4DProvB3/aqkJ+MeT9wHWhNy6TzqVMqoSufEIXwgeCEa+vyge91nyh6N8wP7xo"
    "/HMs7xApOgOedYZivUXuaNT3j/aP9w73Yy/Eklng54GeQsQog065gFcMq41+sUBPcTRZ7E"
    "+H0CtIYxOThTb6TctaTRc+AgeRARuKOD44mAFqtNHzVmqZGKoaU91E0lG3d1qqRCCYR/yc"
    "eggPyCc0lri3+SAhsXQMSUgCXofdvDK8J1FARdJkl/PgQ8zfpeOMz53PGLFpZDavTptnrS"
    "nh14fW3QP0bFAAdZiL+5rNJbQ8/3SJnJhI1SN9Me1li8CW4NEGTYGWgTOvchuuKoGEg2KH"
    "7xZvUuDSENcpJIs567TTlktXf88wy6J/kSrxyeQV2EbuiDJErDG4Q2PzxzxU9zO0djQxEO"
    "0AFZW9iVR2+ex73dXm1iXcHtVdHhQnIVH7LcxA6odzJCB1lRtL8g+hUphpShjSVTDF1XzK"
    "ZCsgXnc5zyh1gAUdR5N5FN/QZK1+6Y5mw+rGdV/GxEhqi5sZl5KKXUVlVXeTW7Ac1GS2xE"
    "mrMd2GRaFU/bXaPFV/rVZc9QtddSH8P7wpXIwjXgY3vGleXTY5nC7Jted4cemrMV1mHby5"
    "y+fZsrfifl+U+1Vppl/kgNUvgr4y/OflgjXLWc8Jq/Fd0ewrpNlXySFL1DUEcuSNYvZYTG"
    "g+6tjsEmTws32ICMOWcK3hB/1/kMXeGtD4+KVn3Nxwwc2NQT0u8JmNqSG6N8SgdriAx5Jt"
    "8Mjs88h0d03FMavo//nvYJcij2fl/cvb5Z+njV/fHr8zg0CuMv9ib/AJ2l3ijMMoeCWVQB"
    "iwuUIgd9LPcymZ+03G4jeTW3r+676KWd3hrvMOt4k8bA11J3ComXkGw6TNKn9uVOqoKyzF"
    "tSedpgIP94DNPeiWUn4Xn2pio9FWLcVJRMqkqhdn5RIJymJRlUA4bL6F6Nbn4mTrMzjZuo"
    "aTLboKLb6aKL4KXcPNxCu/kiuRHi3/MJv8BMXt+0U="
)
