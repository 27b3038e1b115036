"""Nothing to change on SQLite: the PostgreSQL migration of the same number puts user_id in
the search index, and SQLite's FTS5 table is searched through its own index already. The
two migration sets keep the same numbers so that one schema version means one schema."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return ""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return ""

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
