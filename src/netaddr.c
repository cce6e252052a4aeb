/*
 * netaddr.c - IPv4/IPv6 CIDR blocks for relay networks: parsing with
 * inet_pton, one canonical text form (inet_ntop + "/prefix") used as the
 * LMDB key, and matching of peer addresses, where an IPv4-mapped IPv6 peer
 * (::ffff:a.b.c.d, as seen on a dual-stack socket) counts as IPv4.
 */
#include "autoconf.h"

#include <arpa/inet.h>
#include <netdb.h>
#include <errno.h>
#include <unistd.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>

#include "config.h"
#include "netaddr.h"
#include "util.h"

#define NETADDR_TEXT_MAX	(INET6_ADDRSTRLEN + 4)

/* netaddr_mask - zero the host bits of addr beyond prefix */
static void
netaddr_mask(uint8_t *addr, int alen, int prefix)
{
	int i;

	for (i = 0; i < alen; i++) {
		int bits = prefix - 8 * i;

		if (bits >= 8)
			continue;
		if (bits <= 0)
			addr[i] = 0;
		else
			addr[i] &= (uint8_t)(0xff << (8 - bits));
	}
}

int
netaddr_parse_cidr(const char *s, struct cidr *c, const char **err_r)
{
	static _Thread_local char hint[160];
	char buf[NETADDR_TEXT_MAX + 1], net[INET6_ADDRSTRLEN];
	const char *slash, *p;
	size_t alen;
	int prefix = -1, max;
	struct cidr t;
	uint8_t orig[16];

	memset(&t, 0, sizeof(t));
	if (strlen(s) > NETADDR_TEXT_MAX) {
		*err_r = "address too long";
		return -1;
	}
	slash = strchr(s, '/');
	alen = slash ? (size_t)(slash - s) : strlen(s);
	if (alen == 0) {
		*err_r = "missing address";
		return -1;
	}
	memcpy(buf, s, alen);
	buf[alen] = '\0';
	if (inet_pton(AF_INET, buf, t.addr) == 1) {
		t.family = AF_INET;
		max = 32;
	} else if (inet_pton(AF_INET6, buf, t.addr) == 1) {
		t.family = AF_INET6;
		max = 128;
	} else {
		*err_r = "not an IPv4 or IPv6 address";
		return -1;
	}
	if (slash == NULL)
		prefix = max;
	else {
		p = slash + 1;
		if (*p == '\0' || strlen(p) > 3) {
			*err_r = "bad prefix length";
			return -1;
		}
		prefix = 0;
		for (; *p; p++) {
			if (*p < '0' || *p > '9') {
				*err_r = "bad prefix length";
				return -1;
			}
			prefix = prefix * 10 + (*p - '0');
		}
		if (prefix > max) {
			*err_r = t.family == AF_INET ?
			    "prefix length out of range (0-32)" :
			    "prefix length out of range (0-128)";
			return -1;
		}
	}
	t.prefix = prefix;
	memcpy(orig, t.addr, sizeof(orig));
	netaddr_mask(t.addr, max / 8, prefix);
	if (memcmp(orig, t.addr, sizeof(orig)) != 0) {
		inet_ntop(t.family, t.addr, net, sizeof(net));
		/* static: err_r is documented as a static string */
		snprintf(hint, sizeof(hint),
		    "host bits set; did you mean %s/%d?", net, prefix);
		*err_r = hint;
		return -1;
	}
	*c = t;
	return 0;
}

void
netaddr_cidr_str(const struct cidr *c, char *buf, size_t len)
{
	char a[INET6_ADDRSTRLEN];

	if (inet_ntop(c->family, c->addr, a, sizeof(a)) == NULL)
		util_strlcpy(a, "?", sizeof(a));
	snprintf(buf, len, "%s/%d", a, c->prefix);
}

/* netaddr_prefix_eq - do the first prefix bits of a and b agree? */
static int
netaddr_prefix_eq(const uint8_t *a, const uint8_t *b, int prefix)
{
	int full = prefix / 8, rest = prefix % 8;

	if (full > 0 && memcmp(a, b, (size_t)full) != 0)
		return 0;
	if (rest == 0)
		return 1;
	return ((a[full] ^ b[full]) & (uint8_t)(0xff << (8 - rest))) == 0;
}

int
netaddr_match(const struct cidr *c, const struct sockaddr *sa)
{
	static const uint8_t v4mapped[12] = { 0, 0, 0, 0, 0, 0, 0, 0, 0, 0,
	    0xff, 0xff };
	const uint8_t *a;
	int family;

	if (sa->sa_family == AF_INET) {
		a = (const uint8_t *)
		    &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
		family = AF_INET;
	} else if (sa->sa_family == AF_INET6) {
		a = (const uint8_t *)
		    &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
		family = AF_INET6;
		if (memcmp(a, v4mapped, sizeof(v4mapped)) == 0) {
			a += 12;
			family = AF_INET;
		}
	} else
		return 0;
	if (family != c->family)
		return 0;
	return netaddr_prefix_eq(a, c->addr, c->prefix);
}

void
netaddr_str(const struct sockaddr *sa, char *buf, size_t len)
{
	const void *a;

	if (len == 0)
		return;
	if (sa->sa_family == AF_INET)
		a = &((const struct sockaddr_in *)(const void *)sa)->sin_addr;
	else if (sa->sa_family == AF_INET6)
		a = &((const struct sockaddr_in6 *)(const void *)sa)->sin6_addr;
	else {
		util_strlcpy(buf, "unknown", len);
		return;
	}
	if (inet_ntop(sa->sa_family, a, buf, (socklen_t)len) == NULL)
		util_strlcpy(buf, "?", len);
}

int
netaddr_port(const struct sockaddr *sa)
{
	if (sa->sa_family == AF_INET)
		return ntohs(((const struct sockaddr_in *)(const void *)sa)->
		    sin_port);
	if (sa->sa_family == AF_INET6)
		return ntohs(((const struct sockaddr_in6 *)(const void *)sa)->
		    sin6_port);
	return 0;
}

int
netaddr_bind(const struct addrinfo *ai, char *addr, size_t addrlen)
{
	char host[INET6_ADDRSTRLEN], port[16];
	int fd, one = 1, saved;

	if (getnameinfo(ai->ai_addr, ai->ai_addrlen, host, sizeof(host), port,
	    sizeof(port), NI_NUMERICHOST | NI_NUMERICSERV) != 0) {
		util_strlcpy(host, "?", sizeof(host));
		util_strlcpy(port, "?", sizeof(port));
	}
	snprintf(addr, addrlen, ai->ai_family == AF_INET6 ? "[%s]:%s" :
	    "%s:%s", host, port);
	fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK |
	    SOCK_CLOEXEC, ai->ai_protocol);
	if (fd == -1)
		return -1;
	if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == -1 ||
	    (ai->ai_family == AF_INET6 && setsockopt(fd, IPPROTO_IPV6,
	    IPV6_V6ONLY, &one, sizeof(one)) == -1) ||
	    bind(fd, ai->ai_addr, ai->ai_addrlen) == -1) {
		saved = errno;
		close(fd);
		errno = saved;
		return -1;
	}
	return fd;
}

int
netaddr_listen_each(const struct conf_listen *cl,
    int (*fn)(const struct addrinfo *ai, void *arg), void *arg,
    char addr[NETADDR_LISTEN_STRLEN], const char **why_r)
{
	struct addrinfo hints, *res, *ai;
	const char *host;
	int i, rv;

	*why_r = NULL;
	for (i = 0; i < cl->n; i++) {
		host = cl->host[i];
		if (host == NULL || *host == '\0' || strcmp(host, "*") == 0)
			host = NULL;
		memset(&hints, 0, sizeof(hints));
		hints.ai_family = AF_UNSPEC;
		hints.ai_socktype = SOCK_STREAM;
		hints.ai_flags = AI_PASSIVE;
		if ((rv = getaddrinfo(host, cl->port[i], &hints, &res)) != 0) {
			snprintf(addr, NETADDR_LISTEN_STRLEN, "%s:%s",
			    host ? host : "*", cl->port[i]);
			*why_r = gai_strerror(rv);
			return -1;
		}
		for (ai = res; ai != NULL; ai = ai->ai_next)
			if (fn(ai, arg) == -1) {
				freeaddrinfo(res);
				return -1;
			}
		freeaddrinfo(res);
	}
	return 0;
}
