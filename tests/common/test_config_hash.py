"""The approval hash is pinned: sites approve run configs by it, so no refactoring may move it.

Every value below was computed before the hash was derived from the fields' markers; a change here
means every config a site approved would need approving again.
"""

from __future__ import annotations

import tomllib
import typing
from typing import Any

import pytest
from pydantic import BaseModel

from fedward.common.config_hash import HashRule, hash_rule, hashed_form
from fedward.common.run_config import RunConfig

DEFAULT_HASH = "2945c913b70de03a19ae979f29fb3db1059bc7616a539a7501b98b261552f735"

CASES: dict[str, dict[str, Any]] = {
    "defaults": {},
    "schema_file_set": {"task": {"schema_file": "/somewhere/schema.toml"}},
    "central_dp_on": {"privacy": {"central": {"enabled": True}}},
    "central_dp_off_noise_changed": {"privacy": {"central": {"noise_multiplier": 2.0}}},
    "secure_aggregation_on": {"strategy": {"secure_aggregation": True}},
    "secagg_changed_while_off": {"strategy": {"secagg": {"num_shares": 5}}},
    "secagg_on_and_changed": {
        "strategy": {"secure_aggregation": True, "secagg": {"timeout_s": None}}
    },
    "malicious_sites": {"strategy": {"name": "krum", "malicious_sites": 1}},
    "multikrum_select": {"strategy": {"multikrum_select": 3}},
    "validation_off": {"strategy": {"validation": {"enabled": False}}},
    "validation_max_norm": {"strategy": {"validation": {"max_norm": 5.0}}},
    "shuffle_labels": {"training": {"shuffle_labels": True}},
    "positive_weight": {"training": {"positive_weight": 3.0}},
    "positive_weight_int_one": {"training": {"positive_weight": 1}},
    "he_compatible": {"model": {"he_compatible": True}},
    "tuning_epsilon_share": {"tuning": {"epsilon_share": 0.25}},
    "tuning_budget": {"tuning": {"budget": 5}},
    "card_edited": {
        "card": {"owners": ["someone"], "caveats": ["small sample"], "data_license": "CC BY 4.0"}
    },
    "rounds": {"rounds": 3},
    "name": {"name": "other"},
    "baselines_off": {"baselines": {"enabled": False}},
    "controls_on": {"controls": {"label_shuffle": True, "leave_one_site_out": True}},
    "audit_changed": {"audit": {"reference_models": 0}},
    "evaluation_changed": {"evaluation": {"bootstrap": 0}},
    "splits_changed": {"splits": {"audit": 0.0}},
    "preprocessing_dp": {"preprocessing": {"source": "dp-aggregates", "epsilon_share": 0.2}},
    "dp_off": {"privacy": {"dp": False}},
    "dataset_synthetic": {
        "task": {"dataset": "synthetic", "n_sites": 10, "partition": "dirichlet"}
    },
    "everything_exempt_changed": {
        "task": {"schema_file": "s.toml"},
        "privacy": {"central": {"enabled": True, "adaptive": True}},
        "strategy": {
            "malicious_sites": 2,
            "multikrum_select": 4,
            "validation": {"max_norm_ratio": None},
        },
        "training": {"shuffle_labels": True, "positive_weight": 0.5},
        "model": {"kind": "mlp", "he_compatible": True},
        "tuning": {"epsilon_share": 0.75},
        "card": {"owners": ["x"]},
    },
}

PINNED = {
    "defaults": "2945c913b70de03a19ae979f29fb3db1059bc7616a539a7501b98b261552f735",
    "schema_file_set": "2945c913b70de03a19ae979f29fb3db1059bc7616a539a7501b98b261552f735",
    "central_dp_on": "273a0153676e7826a0a1975036fddbd3d9957f6cd8c04af66fcacdde9a2c6f6d",
    "central_dp_off_noise_changed": "de7c2db25f55cac34efa9407e81e6b393c68cc87c27a812c63d2b62e5e7680c3",
    "secure_aggregation_on": "b1f4bac7a9e6fc3eade5555c6ac0281ff5c81eac2ec103e0261209bffe7cdbee",
    "secagg_changed_while_off": "778c1c6ac51498572357f0a1471c11bf57d75baa56ae2e6df7b68ee27f53b852",
    "secagg_on_and_changed": "472ec21aab273ecd42022e921019f4a242dad9f58f8115d37581b5885ec01b33",
    "malicious_sites": "c0df9772195afbd3fb29461fe0ef3b20425864b40fdfed2730ab6bb335b11111",
    "multikrum_select": "caecc47129203c6a5debfcae22612987993fd7cb97be2efaf3ee5482e49062a3",
    "validation_off": "018c96f78fc4e66653e5ba2acb55b0ab1ecf2acd8cdbce0cdd3fed3120c27bac",
    "validation_max_norm": "388fe4ff2faeacd9df07e1618a112c8ab1668eddeda77e0f82851c8943c35c6d",
    "shuffle_labels": "5171eb5457c3d765c299a58ceab70bcbcc1e21f0d4794df86d66eb3466887f6e",
    "positive_weight": "4b2372fe7a6bac8035e767e884e8de675e27cbe6c2a37e3e05975f894df04576",
    "positive_weight_int_one": "2945c913b70de03a19ae979f29fb3db1059bc7616a539a7501b98b261552f735",
    "he_compatible": "99f85180e5476ee397e54d6abcb2da4be33b75687e8024cdee7bd389a71dae62",
    "tuning_epsilon_share": "7f3bb2fa529b6de63412a6d7ad81aecc25948668c3b65d212cd6ce5ffc6337ba",
    "tuning_budget": "ff80d04848a14954cfbb156b95e57c119c974fa383dead203952e800eb6ccb8f",
    "card_edited": "2945c913b70de03a19ae979f29fb3db1059bc7616a539a7501b98b261552f735",
    "rounds": "f08ac9e2f28ca3071b6befe1bb2f77d9a1b91d648e74dc43daad12c17743c621",
    "name": "ed4e1726b32cbec797a453fcc0b4ba64dfd3dcdbb8e2ca94784f5372d773cf5b",
    "baselines_off": "afd4498948f9d7b6433b4a19fdd77db61b64053a5e7904eba9b680e96a9acb8f",
    "controls_on": "50ce85e120ec4de1b39ca0ff8412124ab75a9a9a147b00eab8f4eb27c1efa01b",
    "audit_changed": "ba2a43e446d5ac12ddaaccad16f2034a3e0d637516b7e5e2a8538a0ce7b06ec0",
    "evaluation_changed": "7b1ef6030ce062647a7f37eb1197f02b6547df5352824521593a36629d4d9b8b",
    "splits_changed": "da21ec0e1dbcd589532b20b305c31a6c27d1230acfdc089312e0285ab09dec62",
    "preprocessing_dp": "f12cc5163fb00222a3bdf4b368eecae9d1c5b09d5cb94455ecea5a9facf16185",
    "dp_off": "ddccf9c6ca13cbd01fe20e337925e4197278448fad5018921bebe0db702639e3",
    "dataset_synthetic": "e29eaba67e34b57ef94ebdba42d8edda5e6755960e345a95be06ac5dffdadded",
    "everything_exempt_changed": "0281552e17a40440747e63bfcd112a480460d5ef9fcbb2cdac8ddf3c4dc58fbf",
}

# The run configs the documentation shows (docs/architecture.md, site-guide.md,
# encrypted-inference.md), copied here so that editing the docs cannot move a pin.
DOCUMENTED: dict[str, tuple[str, str]] = {
    "robust_strategy": (
        """
[strategy]
name = "fedmedian"
[strategy.validation]
enabled = true
max_norm = 100.0
max_norm_ratio = 10.0
""",
        "bb6a4f1e6178b9437c7de3980209e2fdb3033e4177534ac9171aa2cd8746ea3b",
    ),
    "baselines_tuning_controls": (
        """
[baselines]
enabled = true
families = ["logistic_regression", "random_forest", "knn", "naive_bayes", "svm", "hist_gradient_boosting"]
federated_logistic = true
pooled_reference = true
[tuning]
budget = 20
search = "random"
deep = false
[controls]
label_shuffle = false
leave_one_site_out = false
""",
        DEFAULT_HASH,
    ),
    "central_dp": (
        """
[strategy]
name = "fedavg"
fraction_train = 0.2
min_sites = 10
[privacy.central]
enabled = true
noise_multiplier = 1.0
clipping_norm = 1.0
""",
        "4869292e031daff709b2e50f2f3b8717ff55074b527f2a4a6dad810299c5f2ea",
    ),
    "secure_aggregation": (
        """
[strategy]
name = "fedavg"
min_sites = 2
secure_aggregation = true
[strategy.secagg]
num_shares = 3
reconstruction_threshold = 2
max_weight = 10000.0
clipping_range = 8.0
quantization_range = 4194304
timeout_s = 600.0
""",
        "b1f4bac7a9e6fc3eade5555c6ac0281ff5c81eac2ec103e0261209bffe7cdbee",
    ),
    "baselines_off": (
        "[baselines]\nenabled = false\n",
        "afd4498948f9d7b6433b4a19fdd77db61b64053a5e7904eba9b680e96a9acb8f",
    ),
    "audit_off": (
        "[audit]\nenabled = false\n",
        "3cd1dd5007a7e5e5c7df101c365e87f02a98d8f28868285b4d1ea5328e02ec85",
    ),
    "he_compatible_mlp": (
        '[model]\nkind = "mlp"\nhidden = [16]\nhe_compatible = true\n',
        "2e4ad3b21e7ce4744aaa7b7c7387a83c7e0b4347136448e5cf70979cc9d66205",
    ),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_config_hash_is_pinned(case: str) -> None:
    assert RunConfig.model_validate(CASES[case]).config_hash() == PINNED[case]


@pytest.mark.parametrize("name", sorted(DOCUMENTED))
def test_documented_run_configs_keep_their_hash(name: str) -> None:
    text, expected = DOCUMENTED[name]
    run = RunConfig.model_validate(tomllib.loads(text), strict=True)
    assert run.config_hash() == expected


def test_the_default_config_has_the_pinned_hash() -> None:
    assert RunConfig().config_hash() == DEFAULT_HASH


@pytest.mark.parametrize("case", ["schema_file_set", "card_edited", "positive_weight_int_one"])
def test_what_asks_nothing_of_the_sites_leaves_the_hash_alone(case: str) -> None:
    assert PINNED[case] == DEFAULT_HASH


def models_reachable_from(root: type[BaseModel]) -> list[type[BaseModel]]:
    """``root`` and every pydantic model its fields hold, directly or in lists, unions, dicts."""
    seen: list[type[BaseModel]] = []
    todo: list[Any] = [root]
    while todo:
        annotation = todo.pop()
        if isinstance(annotation, type) and issubclass(annotation, BaseModel):
            if annotation not in seen:
                seen.append(annotation)
                todo.extend(f.annotation for f in annotation.model_fields.values())
        else:
            todo.extend(typing.get_args(annotation))
    return seen


def test_the_walk_reaches_nested_and_listed_models() -> None:
    names = {m.__name__ for m in models_reachable_from(RunConfig)}
    assert {"RunConfig", "SecAggConfig", "UpdateValidationConfig", "EthicsEntry"} <= names


def test_every_run_config_field_declares_how_it_enters_the_hash() -> None:
    """A new field must say whether approved configs keep their hash (HashedUnlessDefault) or not."""
    unmarked = [
        f"{model.__name__}.{name}"
        for model in models_reachable_from(RunConfig)
        for name in model.model_fields
        if hash_rule(model, name) is None
    ]
    assert not unmarked, f"fields without a hash marker (fedward.common.config_hash): {unmarked}"


def test_a_field_without_a_marker_is_refused_not_hashed() -> None:
    class Unmarked(BaseModel):
        count: int = 1

    with pytest.raises(TypeError, match=r"Unmarked\.count has no hash marker"):
        hashed_form(Unmarked())


def test_grouped_fields_are_left_out_only_together() -> None:
    group = HashRule("unless-default", group="pair")

    class Pair(BaseModel):
        switch: typing.Annotated[bool, group] = False
        level: typing.Annotated[int, group] = 1

    assert hashed_form(Pair()) == {}
    assert hashed_form(Pair(level=2)) == {"switch": False, "level": 2}
