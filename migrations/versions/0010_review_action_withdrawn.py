"""review action 'withdrawn': a pharmacist withdraws a prescription

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-26 14:05:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None

_BEFORE = ("verified", "first_checked", "second_checked", "rejected", "queried",
           "query_answered")
_AFTER = (*_BEFORE, "withdrawn")


def _check(values: tuple[str, ...]) -> str:
    return "action IN (" + ", ".join(f"'{v}'" for v in values) + ")"


def upgrade():
    with op.batch_alter_table('prescription_reviews', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_prescription_reviews_review_action'), type_='check')
        batch_op.create_check_constraint(op.f('ck_prescription_reviews_review_action'),
                                         _check(_AFTER))


def downgrade():
    # The reviews are append-only (a trigger refuses DELETE): a recorded withdrawal cannot
    # be undone by a downgrade.
    used = op.get_bind().execute(sa.text(
        "SELECT count(*) FROM prescription_reviews WHERE action = 'withdrawn'")).scalar()
    if used:
        raise RuntimeError(f"{used} withdrawal(s) are on record; cannot downgrade past 0010")
    with op.batch_alter_table('prescription_reviews', schema=None) as batch_op:
        batch_op.drop_constraint(op.f('ck_prescription_reviews_review_action'), type_='check')
        batch_op.create_check_constraint(op.f('ck_prescription_reviews_review_action'),
                                         _check(_BEFORE))
