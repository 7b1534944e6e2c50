// SPDX-License-Identifier: GPL-2.0
/* A driver whose init finds no device: the load fails with ENODEV. */
#include <linux/module.h>

static int __init kmodd_nodev_init(void)
{
	pr_info("kmodd_nodev: no device here\n");
	return -ENODEV;
}

module_init(kmodd_nodev_init);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodd test module: init returns -ENODEV");
