select id as product_id, name, category, price, currency
from {{ source('raw', 'products') }}
