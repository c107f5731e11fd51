#!/usr/bin/env python3
"""A real SMTP server (aiosmtpd) for notification's email tests.

Listens on 127.0.0.1 at a free port, prints `PORT <n>` once it accepts connections, then
one `MESSAGE <json>` line per message it accepts: the envelope, the parsed headers, the
decoded text body, and whether the session was encrypted and authenticated.

    smtp_server.py --mode plain|starttls|tls [--cert F --key F] [--user U --password P]

Recipients whose local part is `reject` are refused with 550 (permanent), `busy` with 451
(transient).
"""

import argparse
import asyncio
import email
import json
import ssl
import sys
from email import policy

from aiosmtpd.smtp import SMTP, AuthResult, LoginPassword


class Handler:
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@")[0]
        if local == "reject":
            return "550 5.1.1 no such user here"
        if local == "busy":
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        msg = email.message_from_bytes(envelope.original_content, policy=policy.default)
        body = msg.get_body(preferencelist=("plain",))
        header = lambda name: None if msg[name] is None else str(msg[name])
        record = {
            "mail_from": envelope.mail_from,
            "rcpt_tos": envelope.rcpt_tos,
            "from": header("From"),
            "to": header("To"),
            "subject": header("Subject"),
            "message_id": header("Message-ID"),
            "in_reply_to": header("In-Reply-To"),
            "references": header("References"),
            "auto_submitted": header("Auto-Submitted"),
            "content_type": msg.get_content_type(),
            # SMTP lines end in CRLF; the tests compare text.
            "body": None if body is None else body.get_content().replace("\r\n", "\n"),
            "tls": session.ssl is not None
            or server.transport.get_extra_info("ssl_object") is not None,
            "authenticated": bool(session.authenticated),
            "login": None
            if getattr(session, "auth_data", None) is None
            else session.auth_data.login.decode(),
        }
        print("MESSAGE " + json.dumps(record), flush=True)
        return "250 2.0.0 Message accepted"


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--mode", choices=["plain", "starttls", "tls"], default="plain")
    p.add_argument("--cert")
    p.add_argument("--key")
    p.add_argument("--user")
    p.add_argument("--password")
    args = p.parse_args()

    context = None
    if args.mode != "plain":
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.cert, args.key)

    def authenticator(server, session, envelope, mechanism, auth_data):
        ok = (
            isinstance(auth_data, LoginPassword)
            and auth_data.login == args.user.encode()
            and auth_data.password == args.password.encode()
        )
        # handled=False: aiosmtpd answers a failure with 535 itself.
        return AuthResult(success=ok, handled=False, auth_data=auth_data)

    def factory():
        return SMTP(
            Handler(),
            hostname="smtp.test",
            tls_context=context if args.mode == "starttls" else None,
            require_starttls=args.mode == "starttls",
            # Implicit TLS encrypts the socket itself, which aiosmtpd does not see.
            auth_require_tls=args.mode == "starttls",
            authenticator=authenticator if args.user else None,
            auth_required=bool(args.user),
        )

    async def serve():
        loop = asyncio.get_running_loop()
        server = await loop.create_server(
            factory,
            host="127.0.0.1",
            port=0,
            ssl=context if args.mode == "tls" else None,
        )
        print("PORT %d" % server.sockets[0].getsockname()[1], flush=True)
        async with server:
            await server.serve_forever()

    asyncio.run(serve())


if __name__ == "__main__":
    sys.exit(main())
