"""Mapping between a data set's own category ids and the model's contiguous labels.

Data sets number their categories in many ways: COCO uses 1-based ids with gaps (1..90 for 80 classes), a
`datasets` `ClassLabel` uses 0..K-1 with names, and some data sets store plain strings. The model always sees
contiguous labels `0..K-1` (`K = num_labels`; index `K` of the logits is "no object"). `CategoryMapping` is
the single place that converts between the two, so nobody ever computes "max id + 1", and predictions are
mapped back to the data set's own ids for COCO evaluation.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

__all__ = ["CategoryMapping"]


class CategoryMapping:
    """Bidirectional mapping between data set category ids and contiguous labels `0..K-1`.

    Labels follow the order of `category_ids` as given (the loaders sort them), so a mapping rebuilt from the
    same data set always gives the same labels.

    Args:
        category_ids: The data set's category ids, one per class, unique.
        names: Human-readable class names, one per id; defaults to `str(category_id)`. Duplicate names get the
            category id appended so that `label2id` stays a bijection.

    Raises:
        ValueError: If there are no categories, ids repeat, or `names` has the wrong length.
    """

    def __init__(self, category_ids: Sequence[int], names: Sequence[str] | None = None) -> None:
        category_ids = [_as_category_id(category_id) for category_id in category_ids]
        if not category_ids:
            raise ValueError("A category mapping needs at least one category; the data set defines none.")
        if len(set(category_ids)) != len(category_ids):
            repeated = sorted({i for i in category_ids if category_ids.count(i) > 1})
            raise ValueError(f"Category ids must be unique, but {repeated} appear more than once.")
        if names is None:
            names = [str(category_id) for category_id in category_ids]
        if len(names) != len(category_ids):
            raise ValueError(f"Got {len(names)} category names for {len(category_ids)} category ids.")
        self.category_ids: list[int] = category_ids
        self.names: list[str] = _disambiguate(list(names), category_ids)
        self._label_of_id = {category_id: label for label, category_id in enumerate(category_ids)}

    @classmethod
    def from_coco_categories(cls, categories: Iterable[Mapping[str, Any]]) -> CategoryMapping:
        """Builds the mapping from a COCO `categories` list (`[{"id": 1, "name": "person"}, ...]`), sorted by id."""
        entries = sorted(categories, key=lambda category: _as_category_id(category["id"]))
        return cls([entry["id"] for entry in entries], [str(entry.get("name", entry["id"])) for entry in entries])

    @classmethod
    def from_names(cls, names: Sequence[str]) -> CategoryMapping:
        """Builds the mapping for categories known only by name (a `ClassLabel`): ids are `0..K-1` in order."""
        return cls(list(range(len(names))), list(names))

    @classmethod
    def from_config(cls, config: Any) -> CategoryMapping:
        """Rebuilds the mapping written by `apply_to_config` (or, for other configs, ids = labels)."""
        id2label = {int(label): name for label, name in config.id2label.items()}
        names = [id2label[label] for label in range(len(id2label))]
        category_ids = getattr(config, "category_ids", None) or list(range(len(names)))
        return cls(category_ids, names)

    @property
    def num_labels(self) -> int:
        """Number of classes `K`, not counting "no object"."""
        return len(self.category_ids)

    @property
    def id2label(self) -> dict[int, str]:
        """Contiguous label -> class name, as transformers configs store it."""
        return dict(enumerate(self.names))

    @property
    def label2id(self) -> dict[str, int]:
        """Class name -> contiguous label, as transformers configs store it."""
        return {name: label for label, name in enumerate(self.names)}

    def to_label(self, category_id: int, annotation_id: Any = None, image: Any = None) -> int:
        """Maps a data set category id to its contiguous label.

        Args:
            category_id: The data set's category id.
            annotation_id: Id of the annotation being converted, named in the error message.
            image: File name or id of the image the annotation belongs to, named in the error message.

        Raises:
            ValueError: If the category id is not one of the data set's categories.
        """
        try:
            label = self._label_of_id.get(_as_category_id(category_id))
        except ValueError:
            label = None
        if label is None:
            raise ValueError(
                f"Annotation {annotation_id} of image {image} has category_id {category_id!r}, which is not one "
                f"of the data set's categories {self.category_ids}. Add it to the categories list or fix the "
                "annotation."
            )
        return label

    def to_category_id(self, label: int) -> int:
        """Maps a contiguous label back to the data set's category id.

        Raises:
            ValueError: If the label is outside `0..num_labels-1`.
        """
        if not 0 <= int(label) < self.num_labels:
            raise ValueError(f"Label {label} is outside 0..{self.num_labels - 1}; the model has {self.num_labels}.")
        return self.category_ids[int(label)]

    def apply_to_config(self, config: Any) -> Any:
        """Writes `id2label`, `label2id` (hence `num_labels`) and `category_ids` into a transformers config.

        `category_ids` (the data set's id of each label) is saved in `config.json`, so `from_config` can map a
        checkpoint's predictions back to the data set's ids.

        Returns:
            The same config, modified in place.
        """
        config.id2label = self.id2label
        config.label2id = self.label2id
        config.category_ids = list(self.category_ids)
        return config

    def check_compatible(self, other: CategoryMapping) -> None:
        """Raises `ValueError` unless both mappings give every label the same category id and name."""
        if self.category_ids != other.category_ids or self.names != other.names:
            raise ValueError(
                "The model's labels do not match the data set's categories: model "
                f"{dict(zip(other.category_ids, other.names))} vs data set {dict(zip(self.category_ids, self.names))}."
                " Fine-tune on this data set first, or evaluate on the data set the model was trained on."
            )

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, CategoryMapping):
            return NotImplemented
        return self.category_ids == other.category_ids and self.names == other.names

    def __repr__(self) -> str:
        pairs = ", ".join(f"{i}:{n!r}" for i, n in zip(self.category_ids, self.names))
        return f"CategoryMapping({pairs})"


def _as_category_id(category_id: Any) -> int:
    """Category ids are integers; floats holding integers (as JSON may give) are accepted."""
    if isinstance(category_id, bool) or not isinstance(category_id, (int, float)) or int(category_id) != category_id:
        raise ValueError(f"Category ids must be integers, got {category_id!r} ({type(category_id).__name__}).")
    return int(category_id)


def _disambiguate(names: list[str], category_ids: list[int]) -> list[str]:
    """Appends the category id to names that occur more than once, so names identify labels."""
    return [
        f"{name} ({category_id})" if names.count(name) > 1 else name for name, category_id in zip(names, category_ids)
    ]
