"""Cases shared by the structured-output and tool tests (model server and gateway).

Twenty-odd varied pydantic models (bounded so a tiny model ends), three function tools and a
helper that assembles a streamed chat answer.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Any, Literal

from pydantic import BaseModel, Field

Short = Annotated[str, Field(max_length=12)]


class Color(StrEnum):
    """An enum rendered as `enum` in the schema."""

    red = "red"
    green = "green"
    blue = "blue"


class Person(BaseModel):
    name: Short
    age: Annotated[int, Field(ge=0, le=120)]


class Flags(BaseModel):
    active: bool
    admin: bool


class Paint(BaseModel):
    color: Color


class Size(BaseModel):
    size: Literal["S", "M", "L"]


class Temperature(BaseModel):
    celsius: Annotated[float, Field(ge=-50, le=60)]


class Tags(BaseModel):
    tags: Annotated[list[Short], Field(min_length=1, max_length=3)]


class Scores(BaseModel):
    scores: Annotated[list[Annotated[int, Field(ge=0, le=10)]], Field(max_length=4)]


class Address(BaseModel):
    city: Short
    zip: Annotated[str, Field(pattern=r"^[0-9]{5}$")]


class Customer(BaseModel):
    id: Annotated[int, Field(ge=1, le=9999)]
    address: Address


class Item(BaseModel):
    sku: Short
    qty: Annotated[int, Field(ge=1, le=9)]


class Order(BaseModel):
    items: Annotated[list[Item], Field(min_length=1, max_length=2)]


class MaybeNote(BaseModel):
    note: Short | None


class IntOrText(BaseModel):
    value: int | Short


class Point(BaseModel):
    x: Annotated[int, Field(ge=-100, le=100)]
    y: Annotated[int, Field(ge=-100, le=100)]


class Line(BaseModel):
    start: Point
    end: Point


class Book(BaseModel):
    title: Short
    year: Annotated[int, Field(ge=1450, le=2030)]
    genre: Literal["fiction", "science", "history"]


class Answer(BaseModel):
    yes: bool
    percent: Annotated[int, Field(ge=0, le=100)]


class Pet(BaseModel):
    kind: Literal["cat", "dog"]
    name: Short


class Household(BaseModel):
    pets: Annotated[list[Pet], Field(max_length=2)]
    owner: Person


class Matrix(BaseModel):
    rows: Annotated[
        list[Annotated[list[Annotated[int, Field(ge=0, le=9)]], Field(max_length=2)]],
        Field(max_length=2),
    ]


class Event(BaseModel):
    name: Short
    day: Annotated[int, Field(ge=1, le=31)]
    month: Annotated[int, Field(ge=1, le=12)]


class Shape(BaseModel):
    shape: Circle | Square


class Circle(BaseModel):
    radius: Annotated[int, Field(ge=1, le=50)]


class Square(BaseModel):
    side: Annotated[int, Field(ge=1, le=50)]


Shape.model_rebuild()

MODELS: list[type[BaseModel]] = [
    Person, Flags, Paint, Size, Temperature, Tags, Scores, Customer, Order, MaybeNote,
    IntOrText, Line, Book, Answer, Household, Matrix, Event, Shape, Pet, Address, Point,
]  # fmt: skip

WEATHER = {
    "type": "object",
    "properties": {"city": {"type": "string", "maxLength": 20}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
    "additionalProperties": False,
}
ADD = {
    "type": "object",
    "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
    "required": ["a", "b"],
    "additionalProperties": False,
}
TIME = {
    "type": "object",
    "properties": {"zone": {"type": "string", "maxLength": 20}},
    "required": ["zone"],
    "additionalProperties": False,
}
SCHEMAS = {"get_weather": WEATHER, "add": ADD, "get_time": TIME}
TOOLS: list[Any] = [
    {"type": "function", "function": {"name": name, "description": name.replace("_", " "),
                                      "parameters": schema}}
    for name, schema in SCHEMAS.items()
]  # fmt: skip


def assemble(stream: Any) -> tuple[dict[int, dict[str, str]], str | None, str]:
    """Tool calls, finish reason and text assembled from a chat stream."""
    calls: dict[int, dict[str, str]] = {}
    reason, text = None, ""
    for chunk in stream:
        if not chunk.choices:
            continue
        choice = chunk.choices[0]
        reason = choice.finish_reason or reason
        text += choice.delta.content or ""
        for d in choice.delta.tool_calls or []:
            if d.id is not None:  # the first delta of a call: index, id and name
                assert d.index not in calls and d.function and d.function.name
                calls[d.index] = {"id": d.id, "name": d.function.name, "arguments": ""}
            calls[d.index]["arguments"] += (d.function.arguments if d.function else None) or ""
    return calls, reason, text
