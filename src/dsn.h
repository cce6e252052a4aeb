/*
 * dsn.h - RFC 3464 delivery status notifications: the bounce Petrel sends
 * to a message's original sender (with a null reverse-path) when some of
 * its recipients failed for good. Pure text building, no I/O: deliver.c
 * queues the result through queue_submit().
 *
 * The notification is a multipart/report; report-type=delivery-status
 * (RFC 6522) with three parts: a human-readable text/plain explanation,
 * message/delivery-status (Reporting-MTA, Arrival-Date, and per failed
 * recipient Final-Recipient, Action: failed, Status, Remote-MTA,
 * Diagnostic-Code) and text/rfc822-headers holding the original header
 * section. Every line ends in CRLF; untrusted text (addresses, reply
 * text) has control bytes replaced and is bounded.
 */
#ifndef PETREL_DSN_H
#define PETREL_DSN_H

#include <stddef.h>
#include <stdint.h>

struct evbuffer;

#define DSN_TEXT_MAX	512	/* diagnostic text kept per recipient */

struct dsn_rcpt {
	const char	*address;	/* the failed recipient */
	const char	*status;	/* enhanced status, "5.1.1" */
	const char	*remote_mta;	/* host that answered, NULL if none */
	int		 code;		/* SMTP reply code (local ones too) */
	const char	*reply_enh;	/* the reply's enhanced code or "" */
	const char	*text;		/* reply text */
	const char	*orcpt;		/* ORCPT "type;address", or NULL */
};

struct dsn_info {
	const char		*reporting_mta;	/* our hostname */
	const char		*qid;		/* original queue id */
	int64_t			 arrival;	/* original received_at */
	int64_t			 now;		/* Date: of the report */
	const char		*orig_from;	/* original MAIL FROM (To:) */
	const char		*message_id;	/* "<...>" of the report */
	const char		*boundary;	/* MIME boundary, no "--" */
	const struct dsn_rcpt	*rcpts;
	size_t			 nrcpts;
	const unsigned char	*headers;	/* original header section */
	size_t			 headers_len;
	/* RET=FULL: the whole original message instead of its header
	 * section (message/rfc822); NULL: headers only */
	const unsigned char	*full;
	size_t			 full_len;
	const char		*envid;		/* ENVID, or NULL */
	/* From: MAILER-DAEMON@from_domain (a tenant domain, so the report
	 * can be DKIM-signed with d= its From domain); NULL: reporting_mta */
	const char		*from_domain;
};

/* dsn_build - append the whole report (header and body) to out */
void dsn_build(const struct dsn_info *, struct evbuffer *out);

/* dsn_header_len - length of the header section of a message (up to and
 * including the line end before the empty line, or all of it when there
 * is no empty line) */
size_t dsn_header_len(const unsigned char *msg, size_t len);

/* dsn_date - RFC 5322 date-time of t (UTC) into buf */
void dsn_date(int64_t t, char *buf, size_t len);

#endif
