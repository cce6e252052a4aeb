/*
 * bounce.h - classification of delivery failures. Every failed attempt
 * (deferred or bounced) gets one category, recorded in the recipient's
 * record (last_reply.category) and shown by every status view:
 *
 *   hard          the address is permanently bad, or another permanent
 *                 failure no other category explains (5.1.x, 5.2.1,
 *                 plain 5xx)
 *   soft          a temporary failure no other category explains (4xx)
 *   policy        refused for policy or reputation (x.7.x; texts such as
 *                 "spam", "blocked", "blacklist", "policy")
 *   mailbox_full  x.2.2, or texts such as "mailbox full", "quota"
 *   dns           no route to the domain: null MX (5.1.10), our
 *                 resolver's NXDOMAIN or no address (local 5.1.2),
 *                 x.4.3 (DNS failure), x.4.4 (unable to route)
 *   tls           x.7.5 (our TLS handshake failed), x.7.10 / x.7.11
 *                 (encryption required)
 *   expired       x.4.7: the message outlived queue_lifetime
 *
 * The enhanced status code decides where it is specific; the reply text
 * decides only where the code is generic (none, x.0.0, or a bare class).
 *
 * Suppression: only a "hard" bounce whose code is about the recipient's
 * address (subject 0, 1, 2 or 4, or no enhanced code; never the sender's
 * 5.1.7/5.1.8, never message, protocol or content problems 5.3.x, 5.5.x,
 * 5.6.x) adds the recipient to the tenant's suppression list. Mailbox
 * full, policy, DNS and TLS failures do not: they say nothing lasting
 * about the address.
 *
 * Pure functions, no I/O; safe on any thread.
 */
#ifndef PETREL_BOUNCE_H
#define PETREL_BOUNCE_H

#define BOUNCE_HARD		"hard"
#define BOUNCE_SOFT		"soft"
#define BOUNCE_POLICY		"policy"
#define BOUNCE_MAILBOX_FULL	"mailbox_full"
#define BOUNCE_DNS		"dns"
#define BOUNCE_TLS		"tls"
#define BOUNCE_EXPIRED		"expired"

/* bounce_classify - the category (one of the static names above) of a
 * failure with reply code (0 when no server answered), enhanced status
 * code enh ("5.1.1", "" or NULL) and reply text (may be NULL); local: the
 * reply was made up by Petrel (DNS failure, connection or TLS failure),
 * not sent by a server. *suppress_r (may be NULL) is set to 1 when the
 * recipient belongs on the suppression list, else 0. */
const char *bounce_classify(int code, const char *enh, const char *text,
    int local, int *suppress_r);

/* bounce_valid_category - 0 when s is one of the category names */
int bounce_valid_category(const char *s);

#endif
