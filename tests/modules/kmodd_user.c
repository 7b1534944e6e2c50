// SPDX-License-Identifier: GPL-2.0
/* A module that needs kmodd_dep: loading it first fails with an unknown symbol. */
#include <linux/module.h>

extern int kmodd_dep_value(void);

static bool strict;
module_param(strict, bool, 0444);
MODULE_PARM_DESC(strict, "Refuse to load when the level is 0");

static int __init kmodd_user_init(void)
{
	if (strict && kmodd_dep_value() == 0)
		return -EINVAL;
	return 0;
}

static void __exit kmodd_user_exit(void)
{
}

module_init(kmodd_user_init);
module_exit(kmodd_user_exit);
MODULE_LICENSE("GPL");
MODULE_DESCRIPTION("kmodd test module: uses kmodd_dep_value");
