/*
 * limits.h - every protocol and parser bound in one place. Crossing one
 * yields a protocol reply or an error, never a bigger buffer.
 */
#ifndef PETREL_LIMITS_H
#define PETREL_LIMITS_H

#define CONF_LINE_MAX        4096     /* one line of petrel.conf */
#define NAME_MAX_LEN         64       /* tenant, user, api key names */
#define PASSWORD_MAX_LEN     1024
#define DOMAIN_MAX_LEN       253
#define LOCALPART_MAX_LEN    64
#define ADDRESS_MAX_LEN      (LOCALPART_MAX_LEN + 1 + DOMAIN_MAX_LEN)
#define RETRY_SCHEDULE_MAX   32
#define LISTEN_ADDRS_MAX     8

#define SMTP_LINE_MAX        512      /* RFC 5321 4.5.3.1.4 command line incl. CRLF */
#define SMTP_TEXT_LINE_MAX   1000     /* RFC 5321 4.5.3.1.6 text line incl. CRLF */
#define SMTP_HEADER_MAX      (256 * 1024)  /* whole header section */
/* header fields of a message: well below DKIM_HEADERS_MAX (1000), so the
 * fields Petrel adds (trace, DKIM, ARC, List-Unsubscribe) always fit and
 * every accepted message can be signed */
#define SMTP_HEADER_FIELDS_MAX 500
#define SMTP_AUTH_LINE_MAX   12288    /* an AUTH response line */
#define SMTP_ENVID_MAX       100      /* RFC 3461 4.4 ENVID characters */

#endif
