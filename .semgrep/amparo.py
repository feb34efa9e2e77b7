# Test cases of .semgrep/amparo.yml (`semgrep --test`): never imported, never run.
# ruff: noqa
import logging
import os
import pickle
import subprocess

import jinja2
from sqlalchemy import text

log = logging.getLogger(__name__)


def sql(conn, name, value):
    # ruleid: raw-sql-from-a-formatted-string
    conn.execute(text(f"SELECT * FROM alerts WHERE handle = '{name}'"))
    # ruleid: raw-sql-from-a-formatted-string
    conn.exec_driver_sql(f"DELETE FROM outbox WHERE id = {value}")
    # ruleid: raw-sql-from-a-formatted-string
    conn.execute(text("SELECT * FROM alerts WHERE handle = '%s'" % name))
    # ok: raw-sql-from-a-formatted-string
    conn.execute(text("SELECT * FROM alerts WHERE handle = :name"), {"name": name})


def logs(inbound, chat_id, settings):
    # ruleid: log-message-built-at-run-time
    log.info(f"message from {chat_id}")
    # ruleid: log-message-built-at-run-time
    log.warning("message from " + chat_id)
    # ruleid: log-message-built-at-run-time
    logging.error("message from %s" % chat_id)
    # ruleid: logged-content-or-address
    log.info("received", extra={"channel": inbound.text})
    # ruleid: logged-content-or-address
    log.error("refused", extra={"error": inbound.address})
    # ruleid: logged-content-or-address
    log.debug("token", extra={"error": settings.telegram_token.get_secret_value()})
    # ok: log-message-built-at-run-time
    log.info("received", extra={"channel": inbound.channel})


def dangerous(blob, url, http, command):
    # ruleid: unsafe-deserialisation
    pickle.loads(blob)
    # ruleid: unsafe-deserialisation
    eval(blob)
    # ruleid: tls-not-verified
    http.post(url, ssl=False)
    # ruleid: tls-not-verified
    http.get(url, verify=False)
    # ruleid: shell-command
    subprocess.run(command, shell=True)
    # ruleid: shell-command
    os.system(command)
    # ok: shell-command
    subprocess.run(["pg_ctl", "stop"], check=True)
    # ruleid: template-escaping-off
    jinja2.Environment(autoescape=False)
