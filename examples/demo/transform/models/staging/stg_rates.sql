select cast(date as date) as rate_date, base, quote, rate
from {{ source('raw', 'rates') }}
