"""Twenty-odd varied pydantic models for structured-output tests (bounded so a tiny model ends)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Literal

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
