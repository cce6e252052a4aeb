/*
 * mime.h - build an RFC 5322 / MIME message from an Azure Communication
 * Services EmailMessage (the JSON body of POST /emails:send). Pure: no I/O,
 * no globals; validation first, then the message is written in one go, so a
 * rejected request never leaves anything in the output buffer.
 *
 * Structure built:
 *   text only / html only          single text part
 *   text + html                    multipart/alternative
 *   + inline attachments           multipart/related around that
 *   + regular attachments          multipart/mixed around everything
 * Text parts are 7bit or quoted-printable (UTF-8), attachments base64 at
 * 76 columns, non-ASCII subjects and display names RFC 2047 encoded words,
 * non-ASCII file names RFC 2231. Every line ends in CRLF and is at most
 * MIME_LINE_MAX octets; Bcc recipients never appear in the header.
 *
 * The encoders are exported for the unit tests (tests/unit/test_mime.c).
 */
#ifndef PETREL_MIME_H
#define PETREL_MIME_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>
#include <jansson.h>

struct evbuffer;

/* Limits. ACS allows 50 recipients (to+cc+bcc) and 10 MB of attachments. */
#define MIME_RCPT_MAX		50		/* to + cc + bcc entries */
#define MIME_REPLYTO_MAX	50
#define MIME_ATTACH_MAX		(10 * 1024 * 1024) /* decoded bytes, total */
#define MIME_ATTACH_COUNT_MAX	100
#define MIME_SUBJECT_MAX	2048		/* bytes of UTF-8 */
#define MIME_DISPLAY_NAME_MAX	256		/* bytes of UTF-8 */
#define MIME_FILENAME_MAX	255		/* bytes of UTF-8 */
#define MIME_CONTENT_ID_MAX	128
#define MIME_CONTENT_TYPE_MAX	127
#define MIME_BODY_MAX		(8 * 1024 * 1024) /* plainText, html each */
#define MIME_HEADERS_MAX	50		/* custom headers */
#define MIME_HEADER_NAME_MAX	76
#define MIME_HEADER_VALUE_MAX	900		/* bytes of UTF-8 */
#define MIME_LINE_MAX		998		/* RFC 5322 2.1.1, w/o CRLF */
#define MIME_FOLD_COL		78		/* preferred line length */
#define MIME_QP_COL		76		/* RFC 2045 6.7 (5) */
#define MIME_B64_COL		76
#define MIME_EW_MAX		75		/* RFC 2047 2: encoded word */
#define MIME_EW_MIN		24		/* room for one 4-byte character */

/* mime_build return values; err_code is "BadRequest" for -1 and
 * "RequestEntityTooLarge" for -2 */
#define MIME_OK			0
#define MIME_EINVAL		-1	/* HTTP 400 */
#define MIME_ETOOBIG		-2	/* HTTP 413: attachment/body limits */

struct mime_opts {
	const char	*hostname;	/* Message-ID right side; NULL: localhost */
	time_t		 now;		/* Date:; 0: time(NULL) */
	const char	*boundary_seed;	/* NULL: random boundaries; else
					 * "=_SEED.N" (reproducible tests) */
	size_t		 max_rcpts;	/* 0: MIME_RCPT_MAX */
	size_t		 max_attach;	/* 0: MIME_ATTACH_MAX */
};

/* What the caller needs besides the bytes. All strings malloc'd; release
 * with mime_info_free(). Addresses are local@domain, the domain lower-case
 * A-label (punycode), the local part as written. */
struct mime_info {
	char		*sender;	/* senderAddress, normalised */
	char		*sender_domain;	/* its domain */
	char		*header_from;	/* address in From: (== sender) */
	char		*message_id;	/* "<id@hostname>", as in the header */
	char	       **rcpts;		/* to + cc + bcc, case-insensitively
					 * deduplicated, first spelling kept */
	size_t		 nrcpts;
	int		 tracking_disabled; /* userEngagementTrackingDisabled */
	size_t		 size;		/* bytes appended to out */
};

/* mime_build - validate email_message and append the message (CRLF lines)
 * to out. 0 on success with *info_r filled. On error (MIME_EINVAL,
 * MIME_ETOOBIG) out is untouched, info_r is cleared and *err_code_r,
 * *err_target_r (JSON path of the offending field, e.g.
 * "recipients.to[0].address", "headers.X-Foo"; NULL when the message as a
 * whole is at fault) and *err_msg_r are malloc'd strings for the ACS error
 * body {"error":{"code","message","target"}}. */
int mime_build(const json_t *email_message, const struct mime_opts *opts,
    struct evbuffer *out, struct mime_info *info_r, char **err_code_r,
    char **err_target_r, char **err_msg_r);

/* mime_info_free - release the strings of info (not info itself) */
void mime_info_free(struct mime_info *info);

/* mime_info_json - info as {"sender","sender_domain","header_from",
 * "message_id","recipients":[...],"tracking_disabled","size"} */
json_t *mime_info_json(const struct mime_info *info);

/* Encoders (exported for tests). Each appends to out. */

/* mime_qp_encode - quoted-printable (RFC 2045 6.7) of text whose line
 * breaks are CRLF: hard breaks stay CRLF, lines wrap with soft breaks at
 * MIME_QP_COL, trailing space/tab before a break is encoded. */
void mime_qp_encode(const unsigned char *s, size_t len, struct evbuffer *out);

/* mime_b64_encode - base64 in lines of MIME_B64_COL, each ending CRLF */
void mime_b64_encode(const unsigned char *s, size_t len,
    struct evbuffer *out);

/* mime_ew_next - the next RFC 2047 encoded word ("=?utf-8?b?...?=" or
 * "=?utf-8?q?...?=", q when b is 0) for UTF-8 text s[*pos..len), at most
 * maxlen (<= MIME_EW_MAX, >= MIME_EW_MIN) characters, never splitting a UTF-8
 * sequence. Advances *pos; returns the word's length written to out
 * (NUL-terminated, out holds MIME_EW_MAX + 1). Q uses the RFC 2047 5(3)
 * phrase-safe set, so words fit in any header. */
size_t mime_ew_next(const unsigned char *s, size_t len, size_t *pos, int b,
    size_t maxlen, char *out);

/* mime_valid_addr - validate an addr-spec (dot-atom or quoted local part,
 * domain through domain_normalize); *norm_r = malloc'd normalised address,
 * *domain_r (may be NULL) its domain. -1 + *err_r (static) on error. */
int mime_valid_addr(const char *addr, size_t len, char **norm_r,
    char **domain_r, const char **err_r);

#endif
