from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE "users" (
    "id" VARCHAR(255) NOT NULL PRIMARY KEY,
    "created_at" TIMESTAMP NOT NULL
) /* One authenticated subject: a JWT ``sub`` or a stdio user name, stored verbatim. */;
CREATE TABLE "conversations" (
    "id" CHAR(36) NOT NULL PRIMARY KEY,
    "title" TEXT,
    "metadata" JSON NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "message_count" BIGINT NOT NULL,
    "last_seq" BIGINT NOT NULL,
    "user_id" VARCHAR(255) NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
CREATE INDEX "conversations_user_recent" ON "conversations" ("user_id", "updated_at", "id");
CREATE TABLE "messages" (
    "id" CHAR(36) NOT NULL PRIMARY KEY,
    "seq" BIGINT NOT NULL,
    "role" VARCHAR(16) NOT NULL,
    "content" TEXT NOT NULL,
    "tool_calls" JSON,
    "tool_call_id" TEXT,
    "metadata" JSON NOT NULL,
    "idempotency_key" VARCHAR(200),
    "created_at" TIMESTAMP NOT NULL,
    "conversation_id" CHAR(36) NOT NULL REFERENCES "conversations" ("id") ON DELETE CASCADE,
    "user_id" VARCHAR(255) NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_messages_convers_b8b89b" UNIQUE ("conversation_id", "seq"),
    CONSTRAINT "uid_messages_convers_e11843" UNIQUE ("conversation_id", "idempotency_key")
);
CREATE INDEX "messages_user" ON "messages" ("user_id");
CREATE TABLE "aerich" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSON NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztWm1z2jgQ/isef+rN5BjeArlO52YIIS1tAzcJuXba6SjCFqCLLRFbvoTJ8d8rCb8KmU"
    "AaksD5S4J3tbL0rKTdfeR706U2cvxSm5J/kedDhikx3xr3JoEu4j+0+gPDhNNpohUCBoeO"
    "NLBSLaUGDn3mQYtx5Qg6PuIiG/mWh6fhy0jgOEJILd4Qk3EiCgi+CRBgdIzYBHlc8f0HF2"
    "Niozvki8d7c4SRY8vfZuAjD2BbvDSY2pAhG0AmnrhM2KG7qYd8Xw4s7CqaZmbUQHbkIQsR"
    "ac5mU9nIlH3wyciHubCfXgM5gAxmiyFIOYhsLy+7J6eypZjqEFjUCVyStJ7O2ISSuHkQYL"
    "skbIRujAjyxHRSEAqEQsgj0QItLmBegGKY7ERgoxEMHOEI890oIJaYrCHfJP7U/wyHlmoG"
    "QK8/ABedAQDmBn7jaAqfY8IE0PfzRb8JIFJqihe0P7TO39Qav0kIqM/GnlRKuMy5NIQMgs"
    "TJCcoMMz79JaAH3EN6oGMDBWs+1DVQDjGMQY6aJCgnqzvCL0LoeTEddL4ORM+u7984QtD7"
    "u3UugT5rfZVIu7NQ87nfex81p3yTLrZwr/25fyzRT50DiEHhimXAP170e3rA0zYK5ja2mP"
    "Gf4WCfPWaFrwN+ao0PA+wwTPySeO1LLHOB0WqXqOgr+0F0oLrE8lDqjMs65YRrGHaR3jFZ"
    "S9U1oWkp+rEtB73Q7uiedS4GrbO/Mv44aQ06QlPNbI9I+qah+CjuxPjSHXwwxKPxrd/rqG"
    "6L2w2+mWJMMGAUEHoLoJ3GJBJHooybs6FsEzdnLQs3v2o3uzwzgWPE3RcQjaeP8bhLcgLb"
    "kqniaky2dsiWt+RZPlj+7/c/qtVarVkt1xpHh/Vm8/CofMTbyuEuq5orlsNx9323p4Q5Ic"
    "ieqA70GfDRzWbwp60K5B+HfCp1zwLfnkAv53RLTB6V0L22w8x04R1wEBmzCX+sHh6uADXK"
    "HngrNXsIVdWFbi6rlNG1NoMWCC4jfko9hMfkE5pJ3Lt8kJBYusQ5rA0vw252DO95tKAiqR"
    "kn+R68jcu69Drjc+czRmyxMlsX7dZJZ1EHDqF1fQs9G+RAHR7RvuZkCS1PP50jJ66v9Uif"
    "LXrZI7AleLRKU6Bl4FxWuVVXlUDCQbHDd4s3KXBp+IwUkvlURtppT8tifM8QDqJ/ET/4ZJ"
    "YV2EbulDJErBm4RjPzxzoMyANsRzQxEJ0ABcPxGhmOjTORZ09CthkOXyQP8aiOU8pPQqL2"
    "e5iBVBprJCAVtWRK8g+hUggLShjSFTf5nF3KZC8gfm7ajlHqAAs6jibzyCfusla/RN3tDm"
    "26FY4uRlJb3KzgqhW7grIuKOs92A5qMrtBpNWY7sOmUKr+cnmdqr9czq/6ha64J/gfEsjp"
    "wlEbbfILNI3pU1Zrr9fJDxZnBUP5ogylSob8IlOpfsWyY/ivy1hqtrOeuVTXd0EGb5EM3i"
    "bTKVHX0JyRN/I5TjGh9QhOs0+QwSPQhNfj2BKuNfxg+A+y2FsDGh+/DIyrKy64ujKoxwU+"
    "szE1RPeGGNQBF/C1ZBt8ZQ75ynRLpuKYbfT/8AdkG1Gcq7LTpzvlHyY3d++MP1hBcxb5ab"
    "43+ATtPnFm4SrYkXw1XLBL6epSpF/n6mzpg9LH35/tafzXfUdS3DQ+501jC3nYmugicKhZ"
    "GYNh0mab30pvFOpy75i0kU5zxRSeAa830C3ul6qVerN+VGvU42ulWLLqNim6OcqPauKg0V"
    "Yt+UlEyqSoF1flEgnKYlNtgHDYfA/RrazFHFZWMIcVDXOYd2GXT6DnX9g9A3++4xdHG6RH"
    "Tx/M5j8B/cqxgQ=="
)
