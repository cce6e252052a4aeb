/*
 * smtp_parse.h - pure, bounded parsers for the SMTP server: command lines,
 * RFC 5321 paths, ESMTP parameters, xtext, SIZE, the DATA/BDAT byte state
 * machine (dot-unstuffing, bare CR/LF detection, header/line limits) and
 * the RFC 5322 header section (From extraction). No I/O, no globals: every
 * function takes its input as (pointer, length) and its bounds explicitly,
 * so each can be unit-tested on its own (tests/unit/test_smtp_parse.c).
 */
#ifndef PETREL_SMTP_PARSE_H
#define PETREL_SMTP_PARSE_H

#include <stddef.h>
#include <stdint.h>
#include "limits.h"

#define SMTP_VERB_MAX	16

/* smtp_cmd_split - split a command line (without CRLF) into an upper-cased
 * verb (verb holds SMTP_VERB_MAX bytes) and its argument (leading spaces
 * skipped; *arg_r points into line, *arglen_r its length). -1 when the verb
 * is empty or too long. */
int smtp_cmd_split(const char *line, size_t len, char *verb,
    const char **arg_r, size_t *arglen_r);

/* smtp_prefix - case-insensitive: does s[0..len) start with prefix? */
int smtp_prefix(const char *s, size_t len, const char *prefix);

/* A parsed RFC 5321 path. local is kept as written (a quoted local part
 * keeps its quotes); domain as written (address literals keep brackets). */
struct smtp_path {
	int	 null;				/* "<>" */
	int	 utf8;				/* holds non-ASCII */
	char	 local[LOCALPART_MAX_LEN + 1];
	char	 domain[DOMAIN_MAX_LEN + 3];	/* "[...]" literal fits */
};

#define SMTP_PATH_OK		0
#define SMTP_PATH_SYNTAX	-1	/* 501 5.1.7 / 5.1.3 */
#define SMTP_PATH_UTF8		-2	/* non-ASCII without SMTPUTF8: 553 5.6.7 */
#define SMTP_PATH_TOOLONG	-3	/* 501 5.1.x, too long */

/* smtp_8bit - whether [p, end) holds a byte above 127 */
int smtp_8bit(const char *p, const char *end);
/* smtp_has_keyword - whether the space-separated words of [p, end)
 * include kw, alone (no "=value"), in any case */
int smtp_has_keyword(const char *p, const char *end, const char *kw);

/* smtp_parse_path - s points at '<'. Parses "<>" (when allow_null),
 * "<[@a,@b:]local@domain>" with quoted local parts, address literals and,
 * when allow_utf8, UTF-8 (RFC 6531). *used_r: bytes consumed through '>'.
 * A bare address without brackets is refused. */
int smtp_parse_path(const char *s, size_t len, int allow_utf8, int allow_null,
    struct smtp_path *p, size_t *used_r, const char **err_r);

/* smtp_valid_domain - RFC 5321 Domain (sub-domain *("." sub-domain)) or
 * address literal; UTF-8 labels when allow_utf8. 1 when valid. */
int smtp_valid_domain(const char *s, size_t len, int allow_utf8);

/* smtp_valid_utf8 - 1 when s[0..len) is well-formed UTF-8 */
int smtp_valid_utf8(const unsigned char *s, size_t len);

/* One ESMTP parameter "KEYWORD[=value]" of MAIL/RCPT. */
struct smtp_param {
	const char	*key;
	size_t		 keylen;
	const char	*val;		/* NULL when no '=' */
	size_t		 vallen;
};

/* smtp_param_next - next space-separated parameter from *pp (advanced),
 * up to end. 1: got one, 0: none left, -1: syntax (empty keyword, bad
 * keyword characters, or a control byte / non-ASCII in the value). */
int smtp_param_next(const char **pp, const char *end, struct smtp_param *,
    const char **err_r);

/* smtp_param_is - case-insensitive keyword comparison */
int smtp_param_is(const struct smtp_param *, const char *key);

/* smtp_xtext_decode - RFC 3461 xtext into out (outlen bytes incl. NUL).
 * -1 on a bad "+XX" escape, a raw byte outside 33..126 or '=', a decoded
 * control byte (CR, LF, NUL, any < 0x20 or 0x7f), or no room. */
int smtp_xtext_decode(const char *in, size_t len, char *out, size_t outlen,
    const char **err_r);

/* smtp_parse_size - SIZE= value: 1 to 20 decimal digits, no sign, value
 * fits in uint64. -1 on syntax error (501 5.5.4); the caller compares
 * against max_message_size (552 5.3.4). */
int smtp_parse_size(const char *s, size_t len, uint64_t *v_r);

/*
 * DATA / BDAT byte state machine. DATA mode: only CRLF "." CRLF ends the
 * data; a leading dot is removed (RFC 5321 4.5.2). BDAT mode: no dot
 * processing and no end marker (the length frames the chunk). In both, a
 * CR not followed by LF or an LF not preceded by CR sets SMTP_DATA_BARE
 * and is never treated as a line end, so "\n.\n" and friends can never end
 * the data or split a message; the caller rejects the whole transaction.
 */
#define SMTP_DATA_BARE		0x01	/* bare CR or LF seen */
#define SMTP_DATA_LONGLINE	0x02	/* a line over line_max (incl. CRLF) */
#define SMTP_DATA_HDRBIG	0x04	/* header section over header_max */
#define SMTP_DATA_NUL		0x08	/* NUL byte in the header section */

enum smtp_data_mode { SMTP_DATA_DOT, SMTP_DATA_CHUNK };

struct smtp_data {
	enum smtp_data_mode mode;
	int		 st;		/* internal byte state */
	int		 flags;		/* SMTP_DATA_* */
	int		 in_header;
	size_t		 line_max;
	size_t		 header_max;
	size_t		 linelen;	/* bytes of the current line */
	uint64_t	 size;		/* message bytes produced so far */
	uint64_t	 header_len;	/* header section bytes (no blank line) */
};

void smtp_data_init(struct smtp_data *, enum smtp_data_mode, size_t line_max,
    size_t header_max);
/* smtp_data_feed - run over in[0..len). Message bytes (CRLF lines, dots
 * unstuffed) go to out, which must hold len + 2 bytes; *outlen_r is their
 * count. Returns bytes consumed: all of len unless the end of data was
 * found (DATA mode only), then *done_r = 1 and the rest is not consumed. */
size_t smtp_data_feed(struct smtp_data *, const unsigned char *in, size_t len,
    unsigned char *out, size_t *outlen_r, int *done_r);
/* smtp_data_finish - end of the last BDAT chunk: a pending CR is bare; a
 * last line without CRLF gets one (out holds 2 bytes). Also closes the
 * header section when the message had no body. */
void smtp_data_finish(struct smtp_data *, unsigned char *out,
    size_t *outlen_r);

/* Header section facts (buf = header section, CRLF lines, no blank line). */
struct smtp_hdrinfo {
	unsigned	 nfrom, nmsgid, ndate;
	unsigned	 nfields;		/* every field */
	size_t		 from_off, from_len;	/* From value, folded, raw */
	size_t		 msgid_off, msgid_len;	/* Message-ID value, raw */
};

/* smtp_header_scan - check the header section (every line is a field
 * "name:" or a continuation starting with SP/HT; no NUL, no bare CR/LF) and
 * count/locate From, Message-ID and Date. -1 + *err_r when malformed. */
int smtp_header_scan(const char *buf, size_t len, struct smtp_hdrinfo *,
    const char **err_r);

#define SMTP_FROM_OK		0
#define SMTP_FROM_SYNTAX	-1	/* unparsable: 550 5.6.0 */
#define SMTP_FROM_NOTONE	-2	/* group / several mailboxes: 550 5.7.1 */

/* smtp_header_from - the one mailbox of a From value (may be folded; CRLF
 * count as whitespace). Display names, comments and encoded words are
 * skipped, never decoded. local holds LOCALPART_MAX_LEN+1 bytes, domain
 * DOMAIN_MAX_LEN+1. */
int smtp_header_from(const char *val, size_t len, char *local, char *domain,
    const char **err_r);

#endif
