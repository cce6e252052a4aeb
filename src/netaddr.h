/*
 * netaddr.h - IPv4/IPv6 CIDR parsing, canonical printing and matching.
 */
#ifndef PETREL_NETADDR_H
#define PETREL_NETADDR_H

#include <stddef.h>
#include <stdint.h>
#include <sys/socket.h>

/* room for the canonical text of any CIDR: INET6_ADDRSTRLEN + "/128" */
#define NETADDR_CIDR_STRLEN	(46 + 4)

struct cidr {
	int	 family;	/* AF_INET or AF_INET6 */
	uint8_t	 addr[16];	/* network bytes, host bits zeroed */
	int	 prefix;	/* 0..32 or 0..128 */
};

/* netaddr_parse_cidr - "10.0.0.0/8", "2001:db8::/32", "127.0.0.1" (= /32).
 * Host bits set ("10.0.0.1/8") are an error. */
int netaddr_parse_cidr(const char *s, struct cidr *c, const char **err_r);
/* netaddr_cidr_str - canonical text form into buf */
void netaddr_cidr_str(const struct cidr *c, char *buf, size_t len);
/* netaddr_match - 1 when sa (AF_INET/AF_INET6, v4-mapped v6 treated as v4)
 * is inside c */
int netaddr_match(const struct cidr *c, const struct sockaddr *sa);
/* netaddr_str - printable address of sa (no port) into buf */
void netaddr_str(const struct sockaddr *sa, char *buf, size_t len);
/* netaddr_port - the port of sa (AF_INET/AF_INET6), 0 for other families */
int netaddr_port(const struct sockaddr *sa);

struct addrinfo;
/* netaddr_bind - a non-blocking, close-on-exec socket of ai bound to its
 * address (SO_REUSEADDR; IPV6_V6ONLY for IPv6, so a v4 and a v6 listener
 * on one port do not collide), not yet listening. addr receives the
 * printable "host:port" or "[host]:port" in any case. The fd, or -1 with
 * errno set. */
int netaddr_bind(const struct addrinfo *ai, char *addr, size_t addrlen);

struct conf_listen;
/* room for "host:port" as a listen setting names it */
#define NETADDR_LISTEN_STRLEN	(256 + 1 + 8)
/* netaddr_listen_each - fn(ai, arg) for every address of every host:port
 * of a listen setting (host "*" or empty: every IPv4 and IPv6 address,
 * AI_PASSIVE). 0; -1 when fn returned -1 (*why_r NULL: fn reported it);
 * -1 when a host:port does not resolve, with it in addr and
 * getaddrinfo's reason in *why_r (static text). */
int netaddr_listen_each(const struct conf_listen *cl,
    int (*fn)(const struct addrinfo *ai, void *arg), void *arg,
    char addr[NETADDR_LISTEN_STRLEN], const char **why_r);

#endif
