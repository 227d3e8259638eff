select code, name, symbol
from {{ source('raw', 'currencies') }}
