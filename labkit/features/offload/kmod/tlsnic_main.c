// SPDX-License-Identifier: GPL-2.0
/*
 * tlsnic: veth-like pairs of emulated NICs with TLS 1.2 TX crypto offload.
 *
 * The link kind is created like veth, with the peer described in IFLA_INFO_DATA under
 * VETH_INFO_PEER (a struct ifinfomsg and IFLA_* attributes), so a pair can span two
 * network namespaces in one request. What one end transmits the other receives; on the
 * way, the sending end's "NIC" encrypts the TLS records of offloaded flows
 * (tlsnic_offload.c). Counters are under `ethtool -S`, knobs under
 * /sys/class/net/<dev>/tlsnic/ (tlsnic_knobs.c).
 */
#include <linux/etherdevice.h>
#include <linux/ethtool.h>
#include <linux/module.h>
#include <linux/netdevice.h>
#include <linux/rtnetlink.h>
#include <linux/veth.h>
#include <net/rtnetlink.h>
#include <net/tls.h>

#include "tlsnic.h"

/*
 * Without IP/HW checksum offload netdev_fix_features() clears NETIF_F_HW_TLS_TX; with
 * TSO the NIC sees up to 64 KiB per skb, as a real one does before it segments.
 */
#define TLSNIC_FEATURES (NETIF_F_SG | NETIF_F_HW_CSUM | NETIF_F_RXCSUM | NETIF_F_HIGHDMA | \
			 NETIF_F_GSO_SOFTWARE | NETIF_F_HW_TLS_TX)

static const char *const tlsnic_counter_names[TLSNIC_NR_COUNTERS] = {
#define TLSNIC_NAME(id, name) [TLSNIC_##id] = name,
	TLSNIC_COUNTERS(TLSNIC_NAME)
#undef TLSNIC_NAME
};

/* skb->decrypted tells a receiver in this kernel that a NIC already decrypted the bytes. */
static void tlsnic_clear_decrypted(struct sk_buff *skb)
{
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 10, 0)
#ifdef CONFIG_SKB_DECRYPTED
	skb->decrypted = 0;
#endif
#elif defined(CONFIG_TLS_DEVICE)
	skb->decrypted = 0;
#endif
}

static netdev_tx_t tlsnic_xmit(struct sk_buff *skb, struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev), *peer_priv;
	struct net_device *peer;
	unsigned int len;

	rcu_read_lock();
	peer = rcu_dereference(priv->peer);
	if (unlikely(!peer)) {
		kfree_skb(skb);
		goto dropped;
	}
	skb = tlsnic_tls_xmit(priv, skb);
	if (!skb)
		goto dropped;
	/*
	 * The wire ends in this same kernel, and what crosses a wire is bytes, not the
	 * sender's socket: keeping skb->sk would make the receiving side's egress (an ifb
	 * redirect, say) take it for a TLS-offloaded skb and run tls_device's fallback on it
	 * again. The bytes are encrypted (by us or by the fallback): not "decrypted" either.
	 */
	skb_orphan(skb);
	tlsnic_clear_decrypted(skb);
	len = skb->len;
	if (dev_forward_skb(peer, skb) != NET_RX_SUCCESS)
		goto dropped;
	atomic64_inc(&priv->tx_packets);
	atomic64_add(len, &priv->tx_bytes);
	peer_priv = netdev_priv(peer);
	atomic64_inc(&peer_priv->rx_packets);
	atomic64_add(len, &peer_priv->rx_bytes);
	rcu_read_unlock();
	return NETDEV_TX_OK;

dropped:
	atomic64_inc(&priv->tx_dropped);
	rcu_read_unlock();
	return NETDEV_TX_OK;
}

static int tlsnic_open(struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(priv->peer);

	if (!peer)
		return -ENOTCONN;
	if (peer->flags & IFF_UP) {
		netif_carrier_on(dev);
		netif_carrier_on(peer);
	}
	return 0;
}

static int tlsnic_close(struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(priv->peer);

	netif_carrier_off(dev);
	if (peer)
		netif_carrier_off(peer);
	return 0;
}

static void tlsnic_get_stats64(struct net_device *dev, struct rtnl_link_stats64 *s)
{
	struct tlsnic_priv *priv = netdev_priv(dev);

	s->tx_packets = atomic64_read(&priv->tx_packets);
	s->tx_bytes = atomic64_read(&priv->tx_bytes);
	s->tx_dropped = atomic64_read(&priv->tx_dropped);
	s->rx_packets = atomic64_read(&priv->rx_packets);
	s->rx_bytes = atomic64_read(&priv->rx_bytes);
}

/* Like veth: `ip link` shows the peer as dev@ifN. */
static int tlsnic_get_iflink(const struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct net_device *peer;
	int iflink;

	rcu_read_lock();
	peer = rcu_dereference(priv->peer);
	iflink = peer ? READ_ONCE(peer->ifindex) : 0;
	rcu_read_unlock();
	return iflink;
}

static const struct net_device_ops tlsnic_netdev_ops = {
	.ndo_open = tlsnic_open,
	.ndo_stop = tlsnic_close,
	.ndo_start_xmit = tlsnic_xmit,
	.ndo_get_stats64 = tlsnic_get_stats64,
	.ndo_set_mac_address = eth_mac_addr,
	.ndo_get_iflink = tlsnic_get_iflink,
};

static void tlsnic_get_drvinfo(struct net_device *dev, struct ethtool_drvinfo *info)
{
	strscpy(info->driver, TLSNIC_KIND, sizeof(info->driver));
	strscpy(info->bus_info, "emulated", sizeof(info->bus_info));
}

static int tlsnic_get_sset_count(struct net_device *dev, int sset)
{
	return sset == ETH_SS_STATS ? TLSNIC_NR_COUNTERS : -EOPNOTSUPP;
}

static void tlsnic_get_strings(struct net_device *dev, u32 sset, u8 *data)
{
	int i;

	if (sset != ETH_SS_STATS)
		return;
	for (i = 0; i < TLSNIC_NR_COUNTERS; i++)
		strscpy(data + i * ETH_GSTRING_LEN, tlsnic_counter_names[i], ETH_GSTRING_LEN);
}

static void tlsnic_get_ethtool_stats(struct net_device *dev, struct ethtool_stats *stats,
				     u64 *data)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	int i;

	for (i = 0; i < TLSNIC_NR_COUNTERS; i++)
		data[i] = atomic64_read(&priv->counters[i]);
}

static const struct ethtool_ops tlsnic_ethtool_ops = {
	.get_drvinfo = tlsnic_get_drvinfo,
	.get_link = ethtool_op_get_link,
	.get_sset_count = tlsnic_get_sset_count,
	.get_strings = tlsnic_get_strings,
	.get_ethtool_stats = tlsnic_get_ethtool_stats,
};

static void tlsnic_setup(struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev);

	ether_setup(dev);
	dev->priv_flags &= ~IFF_TX_SKB_SHARING;
	dev->priv_flags |= IFF_LIVE_ADDR_CHANGE | IFF_NO_QUEUE;
	dev->netdev_ops = &tlsnic_netdev_ops;
	dev->ethtool_ops = &tlsnic_ethtool_ops;
	dev->tlsdev_ops = &tlsnic_tlsdev_ops;
	dev->features |= TLSNIC_FEATURES;
	dev->hw_features = TLSNIC_FEATURES;	/* so ethtool -K can turn each one off */
	dev->needs_free_netdev = true;
	dev->max_mtu = ETH_MAX_MTU;
	dev->sysfs_groups[0] = &tlsnic_knobs_group;	/* /sys/class/net/<dev>/tlsnic/ */
	priv->dev = dev;
	priv->strategy = TLSNIC_MLX5;
}

static int tlsnic_validate(struct nlattr *tb[], struct nlattr *data[],
			   struct netlink_ext_ack *extack)
{
	if (tb[IFLA_ADDRESS]) {
		if (nla_len(tb[IFLA_ADDRESS]) != ETH_ALEN)
			return -EINVAL;
		if (!is_valid_ether_addr(nla_data(tb[IFLA_ADDRESS])))
			return -EADDRNOTAVAIL;
	}
	if (tb[IFLA_MTU]) {
		u32 mtu = nla_get_u32(tb[IFLA_MTU]);

		if (mtu < ETH_MIN_MTU || mtu > ETH_MAX_MTU)
			return -EINVAL;
	}
	return 0;
}

static struct rtnl_link_ops tlsnic_link_ops;

/* The peer's attributes, from VETH_INFO_PEER when given (veth_newlink's layout). */
static int tlsnic_parse_peer(struct nlattr *data[], struct nlattr *peer_tb[],
			     struct ifinfomsg **ifmp, struct netlink_ext_ack *extack)
{
	struct nlattr *nla_peer = data ? data[VETH_INFO_PEER] : NULL;
	int err;

	*ifmp = NULL;
	if (!nla_peer)
		return 0;
	*ifmp = nla_data(nla_peer);
	/* in 6.5+ and in 6.1.y stable alike (which both cached kernels are) */
	err = rtnl_nla_parse_ifinfomsg(peer_tb, nla_peer, extack);
	if (err < 0)
		return err;
	return tlsnic_validate(peer_tb, NULL, extack);
}

static int tlsnic_newlink(struct net *src_net, struct net_device *dev, struct nlattr *tb[],
			  struct nlattr *data[], struct netlink_ext_ack *extack)
{
	struct nlattr *peer_tb[IFLA_MAX + 1], **tbp = tb;
	unsigned char name_assign_type;
	struct net_device *peer;
	struct ifinfomsg *ifmp;
	char ifname[IFNAMSIZ];
	struct net *net;
	int err;

	err = tlsnic_parse_peer(data, peer_tb, &ifmp, extack);
	if (err)
		return err;
	if (ifmp)
		tbp = peer_tb;
	if (ifmp && tbp[IFLA_IFNAME]) {
		nla_strscpy(ifname, tbp[IFLA_IFNAME], IFNAMSIZ);
		name_assign_type = NET_NAME_USER;
	} else {
		/* `ip link add A type tlsnic` (iproute2 cannot say `peer`): tlsnic0, ... */
		snprintf(ifname, IFNAMSIZ, TLSNIC_KIND "%%d");
		name_assign_type = NET_NAME_ENUM;
	}

	/* the peer first, in its own namespace (IFLA_NET_NS_FD/PID in its attributes) */
	net = rtnl_link_get_net(src_net, tbp);
	if (IS_ERR(net))
		return PTR_ERR(net);
	peer = rtnl_create_link(net, ifname, name_assign_type, &tlsnic_link_ops, tbp, extack);
	if (IS_ERR(peer)) {
		put_net(net);
		return PTR_ERR(peer);
	}
	if (!ifmp || !tbp[IFLA_ADDRESS])
		eth_hw_addr_random(peer);
	err = register_netdevice(peer);
	put_net(net);
	if (err < 0) {
		free_netdev(peer);
		return err;
	}
	netif_carrier_off(peer);
	err = rtnl_configure_link(peer, ifmp, 0, NULL);
	if (err < 0)
		goto unregister_peer;

	if (!tb[IFLA_ADDRESS])
		eth_hw_addr_random(dev);
	if (tb[IFLA_IFNAME])
		nla_strscpy(dev->name, tb[IFLA_IFNAME], IFNAMSIZ);
	else
		snprintf(dev->name, IFNAMSIZ, TLSNIC_KIND "%%d");
	err = register_netdevice(dev);
	if (err < 0)
		goto unregister_peer;
	netif_carrier_off(dev);

	rcu_assign_pointer(((struct tlsnic_priv *)netdev_priv(dev))->peer, peer);
	rcu_assign_pointer(((struct tlsnic_priv *)netdev_priv(peer))->peer, dev);
	return 0;

unregister_peer:
	unregister_netdevice(peer);
	return err;
}

#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
/* 6.14 packed newlink()'s arguments into struct rtnl_newlink_params (7.2 has only this). */
static int tlsnic_newlink_params(struct net_device *dev, struct rtnl_newlink_params *params,
				 struct netlink_ext_ack *extack)
{
	return tlsnic_newlink(params->src_net, dev, params->tb, params->data, extack);
}
#endif

/* Either end going (ip link del, or its namespace exiting) takes the pair with it. */
static void tlsnic_dellink(struct net_device *dev, struct list_head *head)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(priv->peer);

	RCU_INIT_POINTER(priv->peer, NULL);
	unregister_netdevice_queue(dev, head);
	if (peer) {
		priv = netdev_priv(peer);
		RCU_INIT_POINTER(priv->peer, NULL);
		unregister_netdevice_queue(peer, head);
	}
}

static struct net *tlsnic_get_link_net(const struct net_device *dev)
{
	struct tlsnic_priv *priv = netdev_priv(dev);
	struct net_device *peer = rtnl_dereference(priv->peer);

	return peer ? dev_net(peer) : dev_net(dev);
}

static const struct nla_policy tlsnic_policy[VETH_INFO_MAX + 1] = {
	[VETH_INFO_PEER] = { .len = sizeof(struct ifinfomsg) },
};

static struct rtnl_link_ops tlsnic_link_ops = {
	.kind = TLSNIC_KIND,
	.priv_size = sizeof(struct tlsnic_priv),
	.setup = tlsnic_setup,
	.validate = tlsnic_validate,
#if LINUX_VERSION_CODE >= KERNEL_VERSION(6, 14, 0)
	.newlink = tlsnic_newlink_params,
#else
	.newlink = tlsnic_newlink,
#endif
	.dellink = tlsnic_dellink,
	.policy = tlsnic_policy,
	.maxtype = VETH_INFO_MAX,
	.get_link_net = tlsnic_get_link_net,
};

static int __init tlsnic_init(void)
{
	return rtnl_link_register(&tlsnic_link_ops);
}

/* Deletes the pairs that are left; tls_device moves their offloaded flows to software. */
static void __exit tlsnic_exit(void)
{
	rtnl_link_unregister(&tlsnic_link_ops);
}

module_init(tlsnic_init);
module_exit(tlsnic_exit);

MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("Emulated NIC pairs with TLS 1.2 TX crypto offload, driven by tls_device");
MODULE_ALIAS_RTNL_LINK(TLSNIC_KIND);
