/*
 * dns.h - asynchronous DNS on libunbound, driven by the caller's libevent
 * loop: MX resolution with the RFC 5321 section 5.1 and RFC 7505 rules
 * (preference order, implicit MX, null MX), address and TXT lookups.
 * Nothing here blocks: libunbound's result pipe (ub_fd) is an EV_READ event
 * that calls ub_process(), and every request has its own deadline.
 *
 * Results are passed to a callback, always from the event loop (never from
 * inside dns_mx()/dns_txt()/dns_a()), and are valid only during the
 * callback: copy what you keep (dns_mx_result_dup()). A request handle is
 * valid until its callback starts or dns_cancel() returns.
 * Do not call dns_free() from inside a callback.
 */
#ifndef PETREL_DNS_H
#define PETREL_DNS_H

#include <stddef.h>
#include <sys/socket.h>

struct event_base;
struct dns;
struct dns_req;

#define DNS_MX_HOSTS_MAX	16	/* MX hosts kept, lowest preferences */
#define DNS_HOST_ADDRS_MAX	16	/* addresses kept per host */
#define DNS_MX_RECORDS_MAX	256	/* MX records examined in one answer */
#define DNS_TXT_RECORDS_MAX	64	/* TXT records kept */
#define DNS_NAME_MAX		253	/* text form, no trailing dot */
#define DNS_TIMEOUT_MS		20000	/* default deadline of one request */

/* status of a lookup: what the caller should do with the message */
enum dns_status {
	DNS_OK = 0,
	DNS_NXDOMAIN,	/* the domain does not exist: bounce */
	DNS_NULLMX,	/* RFC 7505 null MX: bounce with 5.1.10 */
	DNS_NODATA,	/* no MX and no A/AAAA, or no usable MX host: bounce */
	DNS_TEMPFAIL	/* SERVFAIL, REFUSED, timeout, malformed: defer */
};

struct dns_mx_host {
	char			*name;	/* lower case, no trailing dot */
	int			 pref;	/* MX preference; 0 for implicit MX */
	int			 status; /* DNS_OK, or DNS_TEMPFAIL when its
					  * address lookups failed temporarily
					  * (then naddrs is 0) */
	size_t			 naddrs;
	struct sockaddr_storage	*addrs;	/* AF_INET first, then AF_INET6;
					 * port 0 (the caller sets it) */
};

struct dns_mx_result {
	int			 status;	/* enum dns_status */
	const char		*error;		/* why, when status != DNS_OK:
						 * static text, never freed */
	int			 implicit;	/* 1: no MX, the domain's own
						 * addresses (RFC 5321 5.1) */
	int			 ttl;		/* seconds the answer may be
						 * kept: the smallest TTL of
						 * the MX and address records
						 * used; -1 when none */
	size_t			 nhosts;
	struct dns_mx_host	*hosts;		/* in the order to try */
};

struct dns_txt_result {
	int			 status;	/* DNS_OK, DNS_NXDOMAIN,
						 * DNS_NODATA, DNS_TEMPFAIL */
	const char		*error;
	size_t			 ntxt;
	char			**txt;		/* one per record, the record's
						 * strings joined, NUL-ended */
	size_t			*txt_len;	/* byte length of each */
};

typedef void (*dns_mx_cb)(const struct dns_mx_result *, void *arg);
typedef void (*dns_txt_cb)(const struct dns_txt_result *, void *arg);

/* dns_new - resolver for base. resolver: "IP", "IP:PORT", "[IPv6]:PORT",
 * "IPv6", or NULL/"" (system resolv.conf and hosts file). Names under
 * .test and .invalid are asked like any other. NULL and *err_r (to free)
 * on error. Call after any fork()/daemon(): libunbound starts a thread. */
struct dns *dns_new(struct event_base *base, const char *resolver,
    char **err_r);
/* dns_free - cancel every pending request (no callbacks) and free */
void dns_free(struct dns *);
/* dns_set_timeout - deadline of requests started afterwards (ms > 0) */
void dns_set_timeout(struct dns *, unsigned int ms);
/* dns_pending - number of requests in progress */
size_t dns_pending(const struct dns *);

/* dns_mx - hosts to deliver mail for domain to, with their addresses */
struct dns_req *dns_mx(struct dns *, const char *domain, dns_mx_cb cb,
    void *arg);
/* dns_a - A and AAAA of one host name; the result holds one host (pref 0)
 * with status DNS_OK, DNS_NXDOMAIN, DNS_NODATA or DNS_TEMPFAIL */
struct dns_req *dns_a(struct dns *, const char *host, dns_mx_cb cb,
    void *arg);
/* dns_txt - TXT records of name */
struct dns_req *dns_txt(struct dns *, const char *name, dns_txt_cb cb,
    void *arg);
/* dns_cancel - forget a request; its callback will not be called */
void dns_cancel(struct dns_req *);

/* dns_status_str - "OK", "NXDOMAIN", "NULLMX", "NODATA", "TEMPFAIL" */
const char *dns_status_str(int status);
/* dns_mx_result_dup - deep copy, freed with dns_mx_result_free() */
struct dns_mx_result *dns_mx_result_dup(const struct dns_mx_result *);
void dns_mx_result_free(struct dns_mx_result *);
/* dns_name_valid - 1 when name is a syntactically valid host/domain name
 * (LDH and '_' labels of 1..63, total <= DNS_NAME_MAX, optional final dot) */
int dns_name_valid(const char *name);

/* dns_parse_mx - MX rdata (2-byte preference + uncompressed wire name,
 * LDH/'_' labels) -> *pref_r and name in lower case ("" for the root ".");
 * -1 when malformed or name does not fit namesz */
int dns_parse_mx(const void *rdata, size_t len, int *pref_r, char *name,
    size_t namesz);
/* dns_parse_txt - TXT rdata -> its strings joined into out (NUL-ended,
 * outsz > len) and *outlen_r; -1 when malformed */
int dns_parse_txt(const void *rdata, size_t len, char *out, size_t outsz,
    size_t *outlen_r);

#endif
