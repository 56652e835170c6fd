"""Mean-field theory of non-lazy (1/N readout) networks: coding schemes (under construction)."""

from widebayes.errors import InputError


def nonlazy_predictions(exp) -> dict:
    raise InputError("the non-lazy theory is not available yet", key="network.readout")
