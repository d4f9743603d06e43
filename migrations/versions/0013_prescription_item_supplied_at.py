"""prescription items are supplied one by one: prescription_items.supplied_at

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-26 16:20:00.000000

"""
from alembic import op
import sqlalchemy as sa


# revision identifiers, used by Alembic.
revision = '0013'
down_revision = '0012'
branch_labels = None
depends_on = None

# Items already supplied take the time their order was last packed (its audit event), so
# that an issue supplied in parts before this revision is not left stuck. Orders counted:
# those packed and still going to or with the patient, the ones the code before this
# revision counted as holding the item (a returned, refunded, failed or cancelled order gave
# it back). Items of dispensed issues with no such order keep NULL: the issue's
# dispensed_at stands for them.
_PACKED_ONCE = ("packed", "out_for_delivery", "delivered")
_STATUSES = ", ".join(f"'{status}'" for status in _PACKED_ONCE)
BACKFILL = sa.text(f"""
    UPDATE prescription_items SET supplied_at = (
        SELECT max(a.occurred_at)
        FROM order_lines l
        JOIN orders o ON o.id = l.order_id
        JOIN audit_events a ON a.entity_type = 'order' AND a.action = 'order.packed'
                           AND a.entity_id = CAST(o.id AS VARCHAR(64))
        WHERE l.prescription_item_id = prescription_items.id
          AND l.quantity_supplied > 0
          AND o.status IN ({_STATUSES}))
    WHERE supplied_at IS NULL
""")


def upgrade():
    # The backfill (and every "is this item on an order" check) looks order lines up by item.
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_order_lines_prescription_item_id'),
                              ['prescription_item_id'], unique=False)
    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.add_column(sa.Column('supplied_at', sa.DateTime(timezone=True),
                                      nullable=True))
    # Data, after the schema change: fills the new column for what was supplied before it.
    op.execute(BACKFILL)


def downgrade():
    with op.batch_alter_table('prescription_items', schema=None) as batch_op:
        batch_op.drop_column('supplied_at')
    with op.batch_alter_table('order_lines', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_order_lines_prescription_item_id'))
