from __future__ import annotations

import pydicom.datadict

from healthgpt.data.decode.deid import ALLOWED_KEYWORDS, PHI_KEYWORDS, pseudonym


def test_allow_list_holds_no_confidentiality_profile_attribute():
    assert ALLOWED_KEYWORDS.isdisjoint(PHI_KEYWORDS)


def test_every_listed_keyword_is_a_real_dicom_attribute():
    unknown = {
        k for k in ALLOWED_KEYWORDS | PHI_KEYWORDS if pydicom.datadict.tag_for_keyword(k) is None
    }
    assert unknown == set()


def test_pseudonyms_are_stable_per_salt_and_hide_the_value():
    first = pseudonym("p10000032", "salt-a")
    assert first == pseudonym("p10000032", "salt-a")
    assert first != pseudonym("p10000032", "salt-b")
    assert first != pseudonym("p10000033", "salt-a")
    assert "10000032" not in first
