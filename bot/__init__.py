"""The Telegram bot (aiogram 3): routers, middlewares, SQLite storage, streaming edits.

It is an assembly point: generation is the runtime's; the bot decides who is answered,
when, with which model, and how the reply reaches Telegram.
Example: `balabol bot` (settings: BALABOL_* variables or .env, see README).
"""
