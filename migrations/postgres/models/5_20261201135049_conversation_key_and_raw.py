"""Conversation keys and raw messages: conversations.key, a caller-chosen name unique per
user (a framework's session id; NULL keys never collide), and messages.raw, a framework's own
form of a message kept verbatim (PostgreSQL: json, which keeps the text as written; jsonb
would reorder keys and rewrite numbers). Both are new nullable columns: nothing stored is
rewritten. And a repair: messages appended in a batch without metadata were stored with
metadata null instead of {}; they get {} (one pass over messages, rewriting only those)."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "conversations" ADD "key" VARCHAR(200);
        ALTER TABLE "messages" ADD "raw" JSON;
        CREATE UNIQUE INDEX "uid_conversatio_user_id_8b755b" ON "conversations" ("user_id", "key");
        UPDATE "messages" SET "metadata" = '{}'::jsonb WHERE "metadata" = 'null'::jsonb;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "uid_conversatio_user_id_8b755b";
        ALTER TABLE "conversations" DROP COLUMN "key";
        ALTER TABLE "messages" DROP COLUMN "raw";"""


MODELS_STATE = (
    "eJztW21T2zgQ/isef+rNcAwJBLjOzc0ECG1aSG4gXDvtdIxiK4kbWwq2fJDh8t9PUvwqy8"
    "FOQnBSfynOvsjSsyvtatd9Vm1sQMvdP8foX+i4gJgYqe+VZxUBG9IHKX9PUcFkEnEZgYC+"
    "xRX0mCTngL5LHKATyhwAy4WUZEBXd8yJ/zLkWRYjYp0KmmgYkTxkPnhQI3gIyQg6lPH9u+"
    "q59Ikyx3Cq/vhBH0xkwCfoMu6zOjChZfBnLqiZBpP1JgYg0NAAYb8ojenBp4kDXZfPk8oz"
    "UrDqxCI0PpADdYi4OplOuJDKx6Br4z9mTH8y1vgEEhDOp8DpWqB7d9e+uOSSbOV9TceWZ6"
    "NIejIlI4xCcc8zjX2mw3hDiKDDlhNDlAHmWyAgzcGjBOJ4MITJiAgGHADPYnZR/xx4SGeL"
    "Vfib2D9Hf/lTi4lpWqfb025bPU1TC5iRoslcwESEAf08m48bAcKpKnvB+cfmzbvD4984BN"
    "glQ4czOVzqjCsCArTIyBHKxCR0+Smge9RCcqBDBQFrOtUcKPsYhiAHIhHKkbMH+AUIbRbT"
    "Xutrj41su+6DxQidf5o3HOjr5leOtD31OVfdzodAHNM9O9/RnfOr7hlHP3YsQAKYKdKAf7"
    "rtduSAx3UEzA1TJ8p/imW6ZBkPzwN+zMf7nmkRE7n77LVv4eYMo8UmEdEX9gMbQDSJ7sDY"
    "GZc0ygXlENOGcsMkNUXT+Kr7wcNrGeiNdkf7unXba17/nbDHRbPXYpx6YnsE1HfHgo3CQZ"
    "Qv7d5Hhf1UvnU7LdFsoVzvm8rmBDyCNYQfNWDEMQnIASlh5mQoK2LmpGZl5lKb2aaZCRhC"
    "aj4PSSx9Zg7bKCOwpVQFU5vo1Q7Zg1eyLJ0s/fP7H/X64eFJ/eDw+LRxdHLSOD04pbJ8um"
    "nWyQJ3OGt/aHeEMMcIyRPVAi7RXPhQDP64VoX8csi7nm0DZ1oknYupVAld8YTOh0/zJvS6"
    "VdzppepLeX/J7PCm/k+xHEOUFQNeNIagvUPmqNeOTo5OD4+PQiuElEXgp4GeQ0QwAVYxhx"
    "cUq4N+OUcfYGdMU9KBg+3ih45EeYd8fMOWYOW0FPrnI+DIsffFdyHUqjZ40iyIhmTEDpKD"
    "gwVYBpGWSon3dJ9Vn/Oy3bxYOTCtuUJpsGTAr1IIjF2IozJvXueNqSzlwGW7+Aoe3Gjk8e"
    "BGI9uDGW/GK9qDsbTaGhThk4hfYgeaQ/QZTjnubTpJgHRZkdVvK9z5w2wZ3rPAoQJqtLcc"
    "8Bi2AOJ+RtdOVwzJ3DObt+fNi5aadUasAVmxYbOVJ8OLAKdPxwTOdBpK5+7qat6c6QN9/A"
    "gcKi73aTaYK8lAfLXLzzfQCvH8lVCXFaZWBOp6PsoO7X3uYriOY66VcLo0y67bIgUgCorh"
    "v5u9SYBL0pmNIZndlI0bbd39WF3weZaJ08WkGaYB7QkmEOlTLXfz9oVGbbAwLQhIVXO2jM"
    "3Z4vWkTddPd+4+52BZOzw7Jw7kdzAhrh3nyIdrYrcnSocZS+i1YkSgrCaXXZ+OqewExJsu"
    "UBOMLU0HliXJPLK/OUhqrfTVQTmTtY19XhAiKb1rL/jMRtDbhYpR9bXNL/+1jZjMFoi0Et"
    "Vd2BQbKKNWnzgtdSRt27cvy3U919HtLJtV193uZMWzn+78Op43kFCdKnda8dPMWCWkYP9H"
    "orrO8kN5DVF1gFYIvhvoAInVvc32K8qGf96GhWQ7v9wZqppta2m2ZfeAXrN0z1GX1O0Da2"
    "QX7dmC8lXs1S6CCk2pRhARU2emVVyv/xPq5L0ClE9fesr9PSXc3yvYoQSXGCZW2PAKm9Qe"
    "JVBfMhTqmX3qmfa+KhjmNcaX9BKEfkChmv2i69b6TvmXq/Xbd8bvLajbVxeubGvQBRpdZE"
    "3VsEm6DRcw32FT969UpM/TMU/9X8+Ndc7L5g1V67ysrfMmdEx9JIvAPmdhDAaRzFrb5quE"
    "uswKiDTSSQof/hlQ3kC3lqpHdlRjB4301pKdRMRUqvviolwiQpltqgII++I7iG4tVym8tq"
    "AUXpOUwrM60NmFvOwO9AYaQltezSuQHq0/mM3+B9/dqww="
)
