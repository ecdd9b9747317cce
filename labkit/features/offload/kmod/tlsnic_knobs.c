// SPDX-License-Identifier: GPL-2.0
/*
 * Per-device knobs under /sys/class/net/<dev>/tlsnic/. sysfs rather than module
 * parameters because each end of each pair is its own NIC, and rather than netlink
 * attributes because they change while flows run (a lab raises a fault mid-transfer).
 * Net devices' sysfs follows network namespaces: run `ip netns exec NS ...` to reach one.
 *
 *   strategy       mlx5 | nfp | drop: what the NIC does with an unexpected sequence number
 *   refuse_add     1: tls_dev_add fails (EOPNOTSUPP), the kernel keeps kTLS in software
 *   corrupt_every  N: flip a bit in the tag of each record whose number is a multiple of N
 *   max_ctx        N: tls_dev_add fails with ENOSPC beyond N offloaded flows (0: no limit)
 *   nr_ctx         offloaded flows now (read-only)
 */
#include <linux/capability.h>
#include <linux/kernel.h>
#include <linux/netdevice.h>
#include <linux/string.h>

#include "tlsnic.h"

const char *const tlsnic_strategy_names[TLSNIC_NR_STRATEGIES + 1] = {
	[TLSNIC_MLX5] = "mlx5",
	[TLSNIC_NFP] = "nfp",
	[TLSNIC_DROP] = "drop",
	NULL,
};

static struct tlsnic_priv *knob_priv(struct device *d)
{
	return netdev_priv(to_net_dev(d));
}

/* The files are 0644 and root-owned; in a user namespace, ask for its CAP_NET_ADMIN. */
static bool knob_may_write(struct device *d)
{
	return ns_capable(dev_net(to_net_dev(d))->user_ns, CAP_NET_ADMIN);
}

static ssize_t strategy_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%s\n", tlsnic_strategy_names[READ_ONCE(knob_priv(d)->strategy)]);
}

static ssize_t strategy_store(struct device *d, struct device_attribute *attr,
			      const char *buf, size_t len)
{
	int i;

	if (!knob_may_write(d))
		return -EPERM;
	i = sysfs_match_string(tlsnic_strategy_names, buf);
	if (i < 0)
		return i;
	WRITE_ONCE(knob_priv(d)->strategy, i);
	return len;
}
static DEVICE_ATTR_RW(strategy);

static ssize_t refuse_add_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", READ_ONCE(knob_priv(d)->refuse_add));
}

static ssize_t refuse_add_store(struct device *d, struct device_attribute *attr,
				const char *buf, size_t len)
{
	bool v;
	int err;

	if (!knob_may_write(d))
		return -EPERM;
	err = kstrtobool(buf, &v);
	if (err)
		return err;
	WRITE_ONCE(knob_priv(d)->refuse_add, v);
	return len;
}
static DEVICE_ATTR_RW(refuse_add);

static ssize_t corrupt_every_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(knob_priv(d)->corrupt_every));
}

static ssize_t corrupt_every_store(struct device *d, struct device_attribute *attr,
				   const char *buf, size_t len)
{
	u32 v;
	int err;

	if (!knob_may_write(d))
		return -EPERM;
	err = kstrtou32(buf, 0, &v);
	if (err)
		return err;
	WRITE_ONCE(knob_priv(d)->corrupt_every, v);
	return len;
}
static DEVICE_ATTR_RW(corrupt_every);

static ssize_t max_ctx_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%u\n", READ_ONCE(knob_priv(d)->max_ctx));
}

static ssize_t max_ctx_store(struct device *d, struct device_attribute *attr,
			     const char *buf, size_t len)
{
	u32 v;
	int err;

	if (!knob_may_write(d))
		return -EPERM;
	err = kstrtou32(buf, 0, &v);
	if (err)
		return err;
	WRITE_ONCE(knob_priv(d)->max_ctx, v);
	return len;
}
static DEVICE_ATTR_RW(max_ctx);

static ssize_t nr_ctx_show(struct device *d, struct device_attribute *attr, char *buf)
{
	return sysfs_emit(buf, "%d\n", atomic_read(&knob_priv(d)->nr_ctx));
}
static DEVICE_ATTR_RO(nr_ctx);

static struct attribute *tlsnic_knobs_attrs[] = {
	&dev_attr_strategy.attr,
	&dev_attr_refuse_add.attr,
	&dev_attr_corrupt_every.attr,
	&dev_attr_max_ctx.attr,
	&dev_attr_nr_ctx.attr,
	NULL,
};

const struct attribute_group tlsnic_knobs_group = {
	.name = "tlsnic",
	.attrs = tlsnic_knobs_attrs,
};
