/*
 * dsn.c - builds RFC 3464 delivery status notifications (see dsn.h).
 * Only text assembly lives here; the caller decides when a bounce is due
 * and queues the result. Untrusted strings (addresses, remote reply text,
 * the original headers) never bring a bare CR or LF or a control byte into
 * the report: text fields are cleaned by dsn_clean(), header lines are
 * re-terminated with CRLF.
 */
#include "autoconf.h"

#include <stdio.h>
#include <string.h>
#include <time.h>

#include <event2/buffer.h>

#include "dsn.h"
#include "util.h"

/* dsn_clean - copy untrusted text into dst (dstlen incl. NUL): control
 * bytes, DEL and non-ASCII become '?' */
static void
dsn_clean(char *dst, size_t dstlen, const char *src)
{
	size_t i = 0;

	if (src != NULL)
		for (; src[i] != '\0' && i + 1 < dstlen; i++)
			dst[i] = ((unsigned char)src[i] < 0x20 ||
			    (unsigned char)src[i] >= 0x7f) ? '?' : src[i];
	dst[i] = '\0';
}

void
dsn_date(int64_t t, char *buf, size_t len)
{
	time_t tt = (time_t)t;
	struct tm tm;

	gmtime_r(&tt, &tm);
	if (strftime(buf, len, "%a, %d %b %Y %H:%M:%S +0000", &tm) == 0)
		util_strlcpy(buf, "Thu, 01 Jan 1970 00:00:00 +0000", len);
}

size_t
dsn_header_len(const unsigned char *msg, size_t len)
{
	size_t i;

	/* an empty first line: no header at all */
	if (len >= 2 && msg[0] == '\r' && msg[1] == '\n')
		return 0;
	if (len >= 1 && msg[0] == '\n')
		return 0;
	for (i = 0; i + 1 < len; i++) {
		if (msg[i] != '\n')
			continue;
		if (msg[i + 1] == '\n')
			return i + 1;
		if (msg[i + 1] == '\r' && i + 2 < len && msg[i + 2] == '\n')
			return i + 1;
	}
	return len;
}

/* dsn_add_headers - the original header lines, each ended by CRLF; bare
 * CR is dropped, a NUL becomes '?' */
static void
dsn_add_headers(struct evbuffer *out, const unsigned char *h, size_t len)
{
	size_t i, start = 0;
	unsigned char c;

	for (i = 0; i < len; i++) {
		c = h[i];
		if (c == '\n') {
			evbuffer_add(out, h + start, i - start);
			evbuffer_add(out, "\r\n", 2);
			start = i + 1;
		} else if (c == '\r' || c == '\0') {
			evbuffer_add(out, h + start, i - start);
			if (c == '\0')
				evbuffer_add(out, "?", 1);
			start = i + 1;
		}
	}
	if (start < len) {
		evbuffer_add(out, h + start, len - start);
		evbuffer_add(out, "\r\n", 2);
	}
}

void
dsn_build(const struct dsn_info *in, struct evbuffer *out)
{
	char date[64], arrival[64], from[320], addr[320], text[DSN_TEXT_MAX + 1];
	char host[256], status[16], envid[101];
	const struct dsn_rcpt *r;
	size_t i;

	dsn_date(in->now, date, sizeof(date));
	dsn_date(in->arrival, arrival, sizeof(arrival));
	dsn_clean(from, sizeof(from), in->orig_from);
	dsn_clean(envid, sizeof(envid), in->envid);

	evbuffer_add_printf(out,
	    "From: Mail Delivery System <MAILER-DAEMON@%s>\r\n"
	    "To: <%s>\r\n"
	    "Subject: Undelivered Mail Returned to Sender\r\n"
	    "Date: %s\r\n"
	    "Message-ID: %s\r\n"
	    "Auto-Submitted: auto-replied\r\n"
	    "MIME-Version: 1.0\r\n"
	    "Content-Type: multipart/report; report-type=delivery-status;\r\n"
	    "\tboundary=\"%s\"\r\n"
	    "\r\n"
	    "This is a MIME-encapsulated message.\r\n"
	    "\r\n"
	    "--%s\r\n"
	    "Content-Description: Notification\r\n"
	    "Content-Type: text/plain; charset=us-ascii\r\n"
	    "\r\n"
	    "This is the mail system at host %s.\r\n"
	    "\r\n"
	    "Your message (queue id %s) could not be delivered to one or more\r\n"
	    "recipients. It has been returned for good: no further attempt\r\n"
	    "will be made for the recipients listed below.\r\n"
	    "\r\n",
	    in->from_domain != NULL ? in->from_domain : in->reporting_mta,
	    from, date, in->message_id, in->boundary,
	    in->boundary, in->reporting_mta, in->qid);
	for (i = 0; i < in->nrcpts; i++) {
		r = &in->rcpts[i];
		dsn_clean(addr, sizeof(addr), r->address);
		dsn_clean(text, sizeof(text), r->text);
		dsn_clean(host, sizeof(host), r->remote_mta);
		dsn_clean(status, sizeof(status), r->reply_enh);
		if (r->remote_mta != NULL)
			evbuffer_add_printf(out, "<%s>: host %s said: %d%s%s "
			    "%s\r\n", addr, host, r->code, status[0] ? " " : "",
			    status, text);
		else
			evbuffer_add_printf(out, "<%s>: %s\r\n", addr, text);
	}
	evbuffer_add_printf(out,
	    "\r\n"
	    "--%s\r\n"
	    "Content-Description: Delivery report\r\n"
	    "Content-Type: message/delivery-status\r\n"
	    "\r\n"
	    "%s%s%s"
	    "Reporting-MTA: dns; %s\r\n"
	    "X-Petrel-Queue-ID: %s\r\n"
	    "Arrival-Date: %s\r\n",
	    in->boundary, in->envid != NULL ? "Original-Envelope-Id: " : "",
	    envid, in->envid != NULL ? "\r\n" : "", in->reporting_mta,
	    in->qid, arrival);
	for (i = 0; i < in->nrcpts; i++) {
		r = &in->rcpts[i];
		evbuffer_add(out, "\r\n", 2);	/* each recipient's group */
		if (r->orcpt != NULL) {
			dsn_clean(addr, sizeof(addr), r->orcpt);
			evbuffer_add_printf(out, "Original-Recipient: %s\r\n",
			    addr);
		}
		dsn_clean(addr, sizeof(addr), r->address);
		dsn_clean(text, sizeof(text), r->text);
		dsn_clean(status, sizeof(status), r->status);
		evbuffer_add_printf(out,
		    "Final-Recipient: rfc822; %s\r\n"
		    "Action: failed\r\n"
		    "Status: %s\r\n", addr, status[0] ? status : "5.0.0");
		if (r->remote_mta != NULL) {
			dsn_clean(host, sizeof(host), r->remote_mta);
			evbuffer_add_printf(out, "Remote-MTA: dns; %s\r\n",
			    host);
		}
		dsn_clean(status, sizeof(status), r->reply_enh);
		/* "smtp" only for a reply a server sent (RFC 3464 2.3.6);
		 * our own findings (DNS, expiry, TLS) get an X- type, as
		 * Postfix writes X-Postfix */
		if (r->remote_mta != NULL)
			evbuffer_add_printf(out, "Diagnostic-Code: smtp; "
			    "%d%s%s %s\r\n", r->code, status[0] ? " " : "",
			    status, text);
		else
			evbuffer_add_printf(out, "Diagnostic-Code: X-Petrel; "
			    "%s\r\n", text);
	}
	evbuffer_add_printf(out,
	    "\r\n"
	    "--%s\r\n"
	    "Content-Description: Undelivered Message%s\r\n"
	    "Content-Type: %s\r\n"
	    "\r\n", in->boundary, in->full != NULL ? "" : " Headers",
	    in->full != NULL ? "message/rfc822" : "text/rfc822-headers");
	if (in->full != NULL)
		dsn_add_headers(out, in->full, in->full_len);
	else
		dsn_add_headers(out, in->headers, in->headers_len);
	evbuffer_add_printf(out, "\r\n--%s--\r\n", in->boundary);
}
