"""Forks (forked_from, kept when the parent is deleted) and full-text search with FTS5.

messages_fts indexes each message's content and tool_calls (porter stemming over unicode61).
Its rowids come from message_search, whose INTEGER PRIMARY KEY keeps them stable (messages'
own rowids may change with VACUUM); its content is read through a view, and triggers keep it
in step with messages inside the statement that inserts or deletes (cascades included). The
messages already stored are indexed here."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "conversations" ADD "forked_from_id" CHAR(36)
            REFERENCES "conversations" ("id") ON DELETE SET NULL;
        ALTER TABLE "conversations" ADD "forked_from_seq" BIGINT;
        CREATE INDEX "conversations_forks" ON "conversations" ("forked_from_id")
            WHERE "forked_from_id" IS NOT NULL;
        CREATE TABLE "message_search" (
            "id" INTEGER PRIMARY KEY,
            "message_id" CHAR(36) NOT NULL UNIQUE
        );
        CREATE VIEW "message_search_content" AS
            SELECT s."id" AS "id", m."content" AS "content", m."tool_calls" AS "tool_calls"
            FROM "message_search" s JOIN "messages" m ON m."id" = s."message_id";
        CREATE VIRTUAL TABLE "messages_fts" USING fts5(
            "content", "tool_calls",
            content='message_search_content', content_rowid='id',
            tokenize='porter unicode61'
        );
        CREATE TRIGGER "messages_search_insert" AFTER INSERT ON "messages" BEGIN
            INSERT INTO "message_search" ("message_id") VALUES (new."id");
            INSERT INTO "messages_fts" (rowid, "content", "tool_calls")
                VALUES (last_insert_rowid(), new."content", new."tool_calls");
        END;
        CREATE TRIGGER "messages_search_delete" AFTER DELETE ON "messages" BEGIN
            INSERT INTO "messages_fts" ("messages_fts", rowid, "content", "tool_calls")
                SELECT 'delete', s."id", old."content", old."tool_calls"
                FROM "message_search" s WHERE s."message_id" = old."id";
            DELETE FROM "message_search" WHERE "message_id" = old."id";
        END;
        INSERT INTO "message_search" ("message_id") SELECT "id" FROM "messages" ORDER BY rowid;
        INSERT INTO "messages_fts" ("messages_fts") VALUES ('rebuild');"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TRIGGER IF EXISTS "messages_search_delete";
        DROP TRIGGER IF EXISTS "messages_search_insert";
        DROP TABLE IF EXISTS "messages_fts";
        DROP VIEW IF EXISTS "message_search_content";
        DROP TABLE IF EXISTS "message_search";
        DROP INDEX IF EXISTS "conversations_forks";
        ALTER TABLE "conversations" DROP COLUMN "forked_from_seq";
        ALTER TABLE "conversations" DROP COLUMN "forked_from_id";"""

MODELS_STATE = (
    "eJztW21z2jgQ/isef+rN5DK85O06NzdDEtLSJnCTkGunnY4jbAE+bInYchMmx38/SfhVlg"
    "ETIIb6S4J3tbL07Epa7QMvqo0NaLmHFxj9hI4LiImR+l55URGwIf0g1R8oKhiPIy0TENCz"
    "uIEea8k1oOcSB+iEKvvAciEVGdDVHXPsvwx5lsWEWKcNTTSIRB4yHz2oETyAZAgdqvj+g4"
    "pNZMBn6LLHF7VvQsvgn1XPhY5mGuyl3tgABBoaIOyJypgdfB470HX5wPyugmkmRq3xjhyo"
    "Q8TNyWTMG6m8DzoZ/jBl9uORxgeQwGw2BC7XAtv7+9blFW/JptrTdGx5NopajydkiFHY3P"
    "NM45DZMN0AIuiw6cQgZAj5kAeiGVpUQBwPhjAZkcCAfeBZzBHqn30P6WyyCn8T+3P0lz+0"
    "WDNNa3e62l2zq2lqDr9RNJnPTUQY0C/TWb8RIFyqshdcfGzcvquf/MYhwC4ZOFzJ4VKn3B"
    "AQoEVOjlAmJqHTTwHdpR6SAx0aCFjToS6Bso9hCHLQJEI5iu4AvwCh7WLabX7tsp5t1320"
    "mKD9T+OWA33T+MqRtie+5rrT/hA0x3SRzpZw++K6c87Rj+0DkADmijTgn+46bTngcRsBc8"
    "PUifKfYpkuWSXClwE/FuM9z7SIidxD9tq3CHOG0XyXiOgL64F1ILpEd2Bsj0s65ZJqiGlD"
    "uWOSlqJrfNPD4MOmHPRGq6N107zrNm7+TvjjstFtMk0tsTwC6bsTwUdhJ8qXVvejwh6Vb5"
    "12U3Rb2K77TWVjAh7BGsJPGjDimATiQJRwc/Ioy+PmpGXp5kK72aaZCRhA6j4PSTx9bg5a"
    "KONgS5kKrjbRxjbZyoY8SwdL//3+R61Wr5/WKvWTs+Oj09Pjs8oZbcuHm1adzgmH89aHVl"
    "s45pgguaNawCWaCx/zwR+3KpFfDXnXs23gTPKkczGTMqHLn9D58GnemN6v8ge91Hyl6C+Y"
    "H940/imWI4iyzoCFzhCs98gdterR6dFZ/eQo9EIomQd+GugZRAQTYOULeMGw3OhXC/Q+dk"
    "Y0Je072M6/6UiM9yjG39AT+SpWactXVK8K5ovX1Kpid7aoEpkE9WIInIzLWmSyUjpTtLuZ"
    "aoNnzYJoQIZstz4+noNskM7QVmIxxFfVZropL7r2R9KCIEMwjfgVdqA5QJ/hhOPeooMESJ"
    "fVAf1S973fzY7hPQ0CKpBGa8sBT2GVOh5ndO50xpDMIrNxd9G4bKpZe8QakBVJhJ3cGRYC"
    "nN4dEzjTYSjt++vrGX/QA/roCTi0uTymWWeu5JD0za4+30IrxPNXQl1WO3klUDezXvZo7f"
    "MQwzUcC61E0KVVds0WJQBRUAz/3exNAlwStjCGZDZRGHfaejnC7wk6j/XPkkU6mbTCNKA9"
    "xgQifaKN4ET9sQy/uIBLDCamBQdSyR8WkT/MX/LYdolv764cDpYxttk5cdB+DxPi6skS+X"
    "BVJCSidJipBDoQIwJlZaPsEmrMZC8g3nYNlWBsaTqwLEnmkU2LJ61eRYwXM1nbGgMeIim9"
    "a8/5JohgV/IH5RdC9mA5iMlsjpNWYroPi0IoQlUqyxShKpXsIhTTld/C+QW/nrEaMbcOQq"
    "5oXl03Ixe/kuckIiSm67wHF3f5lFTEK06BLVARYplpu4XzouG/bOVcspwXUxQl67MW1ieb"
    "jNhkDZmjLikgB97Irh6zCS1XOlY7CCr0bB9CREyduVZxvd6/UCfvFaB8+tJVHh6o4OFBwQ"
    "4VuMQwscK6V9igDqiAxpKh0Mjs0ci0D1XBMZvof/EPX3IVj+fl/evb5ReXjXdvjz+YU0Au"
    "M/9sb9AJGh1kTdSQrduFm4AfsKmLQOqkX4a6Tf0QbmsUbtGioeRwi8rhNqBj6kPZCexr5p"
    "7BIGqzyd945jrqMq/i0pNOcgP394DiHnRruX5nn2pso5HeWrKTiJhJeV+cl0tEKLNFlQNh"
    "v/keoltdqiZbnVOTrUpqsllUaDY1kU2FboGZ2HFKLkd6tP7DbPo/pvrCGQ=="
)
