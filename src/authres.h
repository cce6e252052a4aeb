/*
 * authres.h - this hop's sender authentication of a relayed message, for
 * the ARC-Authentication-Results field: SPF (libspf2) of the connecting
 * IP with MAIL FROM and HELO, DKIM verification (libopendkim) of the
 * signatures the message arrived with, DMARC (libopendmarc) of the header
 * From domain against aligned SPF/DKIM results.
 *
 * Every DNS query of all three libraries goes through one synchronous
 * libunbound context (struct authres_dns) forwarding to the configured
 * resolver, so tests with a loopback unbound see them all. The calls
 * block: run them on worker threads, never on the event loop. One
 * authres_dns per thread (a libunbound context is not shared here).
 */
#ifndef PETREL_AUTHRES_H
#define PETREL_AUTHRES_H

#include <stddef.h>

#define AUTHRES_TXT_MAX		8192	/* bytes of TXT kept per answer */
#define AUTHRES_SIGS_MAX	8	/* DKIM signatures reported */

struct authres_dns;

/* authres_dns_new - synchronous resolver: resolver "IP", "IP:PORT",
 * "[IPv6]:PORT" or NULL/"" (resolv.conf). Names under .test are asked like
 * any other. NULL + *err_r (malloc'd). */
struct authres_dns *authres_dns_new(const char *resolver, char **err_r);
void authres_dns_free(struct authres_dns *);

/* authres_dns_txt - TXT of name for a DKIM key: the first record holding
 * "p=" (any record if none does), malloc'd into *txt_r. 0 found, 1 no
 * record, -1 temporary failure. Matches arc_txt_fn (arg: the
 * struct authres_dns). */
int authres_dns_txt(void *dns, const char *name, char **txt_r);

struct authres_input {
	const char	*client_ip;	/* connecting IP, text */
	const char	*helo;		/* HELO/EHLO name, may be NULL */
	const char	*mail_from;	/* MAIL FROM address, "" for <> */
	const char	*msg;		/* message bytes, CRLF */
	size_t		 len;
};

/* authres_evaluate - "spf=RESULT smtp.mailfrom=..; dkim=RESULT
 * header.d=.. header.s=.. header.b=..[; dkim=...]; dmarc=RESULT
 * header.from=.." into *result_r (malloc'd, without authserv-id).
 * 0, or -1 with *err_r (malloc'd) when the input is unusable. */
int authres_evaluate(const struct authres_input *, struct authres_dns *,
    char **result_r, char **err_r);

#endif
