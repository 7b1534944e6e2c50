"""Which devices get a re-probe (`core.autoload.reprobe.should_reprobe`), one rule per test."""

from __future__ import annotations

from kmodd.core.autoload.reprobe import BindingFacts, Verdict, should_reprobe

UNBOUND = BindingFacts(bus="pci", driver=None, driver_override="", autoprobe=True,
                       module_drivers={"ahci": ("ahci",)})
BEFORE = frozenset({"ahci"})


def verdict(facts: BindingFacts = UNBOUND, candidates: tuple[str, ...] = ("ahci",),
            before: frozenset[str] = BEFORE, unbound: bool = False,
            reprobed: bool = False) -> Verdict:
    return should_reprobe(facts, candidates, before, unbound_while_watched=unbound,
                          reprobed=reprobed)


def test_an_unbound_device_whose_driver_module_was_live_before_start_is_reprobed() -> None:
    assert verdict() == Verdict(True, "it had no driver, although its driver module ahci "
                                      "(ahci) was live before this instance started", ("ahci",))


def test_a_bound_device_is_left_alone_whoever_bound_it() -> None:
    facts = BindingFacts("pci", "vfio-pci", "", True, {"ahci": ("ahci",)})
    assert verdict(facts) == Verdict(False, "it is bound to vfio-pci")


def test_a_module_this_instance_loaded_declined_the_device_in_a_living_process() -> None:
    assert not verdict(before=frozenset()).probe


def test_a_module_without_a_driver_on_the_devices_bus_does_not_drive_it() -> None:
    facts = BindingFacts("cpu", None, "", True, {})
    assert verdict(facts, candidates=("aesni_intel",), before=frozenset({"aesni_intel"})) == \
        Verdict(False, "none of its modules that were live before this instance started has "
                       "a driver on bus cpu")


def test_driver_override_autoprobe_off_and_an_unbind_are_the_admins_choice() -> None:
    override = BindingFacts("pci", None, "vfio-pci", True, {"ahci": ("ahci",)})
    no_autoprobe = BindingFacts("pci", None, "", False, {"ahci": ("ahci",)})
    assert verdict(override).reason == ("its driver_override is set (vfio-pci): the admin "
                                        "chose its driver")
    assert verdict(no_autoprobe).reason == ("drivers_autoprobe is 0 on bus pci: automatic "
                                            "binding is turned off")
    assert verdict(unbound=True).reason == ("the kernel announced that it lost its driver "
                                            "during this boot: kmodd does not undo an unbind")


def test_a_device_is_reprobed_at_most_once_per_instance() -> None:
    assert verdict(reprobed=True) == Verdict(False, "it was re-probed already by this instance")


def test_a_class_device_or_a_vanished_one_is_not_on_a_bus() -> None:
    facts = BindingFacts(None, None, "", True, {})
    assert verdict(facts) == Verdict(False, "it is not on a bus (or has gone)")
