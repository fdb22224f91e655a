"""Every sentence the bot says, in one place (to reword or translate them together).

Example: `grep -n BUSY bot/texts.py`.
"""

START = (
    "Hi {name}! I'm a small language model running offline on this machine. "
    "Just write to me. /help lists what I can do."
)
HELP = (
    "Write to me and I answer, remembering our chat.\n\n"
    "{commands}\n\n"
    "I answer one message at a time: what you send while I answer is read together, "
    "in order, and answered in one reply (up to {max_chars} characters; /stop cuts the "
    "current answer). At most {limit} messages per {window:g} s.\n\n"
    "In groups I answer when you mention me or reply to me."
)
ADMIN_HELP = "\n\nAdmin: /reload re-reads the models without a restart."

RESET = "🧹 Forgotten: I start this chat from scratch."
NOTHING_TO_RETRY = "Nothing to retry yet: send me a message first."
NOTHING_TO_STOP = "Nothing to stop: I'm not answering you right now."
STOPPING = "⏹ Stopping."
UNKNOWN_COMMAND = "I don't know {command}. /help lists my commands."
NOT_TEXT = "I can only read text for now 🙂 Send me words and I'll answer."
EMPTY = "Send me some words and I'll answer 🙂"

RETRY_BUSY = "⏳ I'm answering you right now: /retry works once I'm done, or /stop me."
BUSY_QUEUE = "😮‍💨 I'm busy: {waiting} requests are already waiting. Please try again in a minute."
IN_LINE = "⏳ You're #{position} in line…"
RESTARTING = "🔄 I'm restarting right now. Please send that again in a minute."
SLOW_DOWN = "🐢 Slow down: at most {limit} messages per {window:g} s. Try again in {wait} s."
NOT_ALLOWED = "🔒 This is a private bot. Your user id is {user_id}; ask its owner to add it."
ADMINS_ONLY = "🔒 Only the bot's admins can do that."

TRUNCATED = "✂️ Your message was long: I read only its first {kept} of {total} characters."
TOO_LONG_FOR_MODEL = (
    "✂️ Your message doesn't fit this model's memory: I read only its first {kept} of "
    "{total} characters."
)
DOES_NOT_FIT = (
    "😕 This model's context is too small for a reply of {tokens} tokens. "
    "Choose a shorter reply in /settings."
)
NO_ANSWER = "🤐 (no answer; try /retry)"
STOPPED = "⏹ stopped"
CUT_BY_RESTART = "🔄 cut short: I'm restarting. Send /retry in a minute."
CUT_BY_CRASH = "🔄 cut short: I restarted in the middle of it. Send /retry for a whole answer."
RESTARTED_UNANSWERED = "🔄 I restarted before I could answer this. Send /retry and I'll answer it."
FAILED = "⚠️ Something went wrong on my side; please try again."
MODEL_UNAVAILABLE = "⚠️ The model {model} can't be loaded right now: {error}"
MODEL_RELOADED = "🔄 The model was just reloaded. Please send that again."

MODEL_MENU = "Your model: {current}\nChoose one (only you are affected):"
MODEL_CHOSEN = "✅ Your model: {model}"
MODEL_GONE = "That model is gone (reloaded?). Send /model again."

SETTINGS_MENU = (
    "Your settings: temperature {temperature:g} (0 = always the likeliest word), "
    "reply length {tokens} tokens.\n"
    "Change them below, or: /settings temperature 0.5 · /settings length 64 · /settings reset"
)
SETTINGS_USAGE = (
    "Usage: /settings temperature T (T from 0 to {max_temperature:g}) · "
    "/settings length N (N from 1 to {max_tokens}) · /settings reset"
)
SETTINGS_SAVED = "✅ Saved: temperature {temperature:g}, reply length {tokens} tokens."
BAD_VALUE = "That value is not allowed."
STALE_BUTTON = "That button is outdated: send the command again."

RELOADED = "🔄 Reloaded: {choices} models ({details})."
