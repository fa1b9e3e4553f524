using System.Buffers;
using System.Numerics;
using System.Numerics.Tensors;
using System.Runtime.CompilerServices;
using System.Runtime.InteropServices;

using static System.FormattableString;

namespace Quantization;

/// <summary>
/// Accumulates the Hessian of a linear layer's squared output error with respect to its weights, <c>H = (2 / n) Σ x xᵀ</c>
/// over the n input rows (tokens) x seen so far: what <see cref="GptqQuantizer"/> needs to compensate rounding errors.
/// </summary>
/// <remarks>
/// <para>
/// The sum <c>Σ x xᵀ</c> is kept in double and scaled by <c>2 / n</c> when the matrix is read. Every product of two floats
/// is exact in double, so this is the same matrix as the reference implementation's running average
/// (<c>H ← H · n / (n + m) + (2 / (n + m)) Σ x xᵀ</c> per batch of m rows) without its rounding at every batch, and adding
/// one row at a time costs no O(K²) rescale per call. The sum cannot overflow: |x| &lt; 3.5e38 gives products below 1.2e77.
/// </para>
/// <para>
/// The K×K update is a blocked rank-k update: rows are taken in chunks, transposed to double, and the lower triangle of
/// <c>XᵀX</c> is computed in 4×4 tiles of SIMD dot products. Not thread-safe; use one accumulator per thread and
/// <see cref="Merge"/> them.
/// </para>
/// </remarks>
public sealed class HessianAccumulator
{
    /// <summary>Rows transposed per chunk: a multiple of every <see cref="Vector{T}"/> width, small enough that a chunk of K = 4096 stays in L2.</summary>
    private const int ChunkRows = 64;

    /// <summary>The tile edge of the rank-k update.</summary>
    private const int Tile = 4;

    /// <summary>The feature count from which a chunk's tile rows are spread over cores (a chunk then holds at least 2M multiply-adds).</summary>
    private const int ParallelFeatures = 256;

    private readonly int _padded;

    /// <summary>The lower triangle (tiles on and below the diagonal) of Σ x xᵀ, row-major, <see cref="_padded"/> on a side.</summary>
    private readonly double[] _sum;

    /// <summary>Initializes a new instance of the <see cref="HessianAccumulator"/> class for a layer with the given number of input features.</summary>
    /// <param name="features">The number of input features K (the last axis of the activations).</param>
    /// <exception cref="ArgumentOutOfRangeException"><paramref name="features"/> is not positive, or so large that the K×K matrix does not fit in an array.</exception>
    public HessianAccumulator(int features)
    {
        ArgumentOutOfRangeException.ThrowIfNegativeOrZero(features);
        int padded = (int)Math.Min(int.MaxValue, ((long)features + Tile - 1) / Tile * Tile);
        if ((long)padded * padded > Array.MaxLength)
        {
            throw new ArgumentOutOfRangeException(nameof(features), features, "A K×K matrix with this many features does not fit in an array.");
        }

        Features = features;
        _padded = padded;
        _sum = new double[(long)padded * padded];
    }

    /// <summary>Gets the number of input features K.</summary>
    public int Features { get; }

    /// <summary>Gets the number of rows (tokens) accumulated so far.</summary>
    public long Rows { get; private set; }

    /// <summary>Adds a batch of activations: every row (every index of all axes but the last) is one input vector of <see cref="Features"/> values.</summary>
    /// <param name="activations">The activations, row-major.</param>
    /// <param name="shape">Their shape; the last axis is the features (K), the leading axes are rows (a rank-1 shape is one row).</param>
    /// <param name="tensorName">A name for the activations, used in exception messages.</param>
    /// <exception cref="ArgumentException">The shape is empty, has a negative dimension, its last axis is not <see cref="Features"/>, or it does not fit the data.</exception>
    /// <exception cref="NonFiniteValueException">The activations contain NaN or an infinity; nothing is accumulated.</exception>
    public void Add(ReadOnlySpan<float> activations, ReadOnlySpan<int> shape, string? tensorName = null)
    {
        if (shape.IsEmpty)
        {
            throw new ArgumentException($"{TensorNames.Describe(tensorName)}: the shape must have at least one dimension.", nameof(shape));
        }

        long count = 1;
        for (int i = 0; i < shape.Length; i++)
        {
            if (shape[i] < 0)
            {
                throw new ArgumentException(Invariant($"{TensorNames.Describe(tensorName)}: dimension {i} of the shape is negative ({shape[i]})."), nameof(shape));
            }

            count = Math.Min(count * shape[i], long.MaxValue / int.MaxValue);
        }

        if (shape[^1] != Features)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(tensorName)} has shape [{string.Join(", ", shape.ToArray())}]: its last axis must be the {Features} input features."), nameof(shape));
        }

        if (count != activations.Length)
        {
            throw new ArgumentException(Invariant($"{TensorNames.Describe(tensorName)} has shape [{string.Join(", ", shape.ToArray())}] ({count} elements) but {activations.Length} values."), nameof(activations));
        }

        QuantizationPrimitives.ThrowIfNonFinite(activations, tensorName, nameof(activations));
        int rows = activations.Length / Features;
        double[] chunk = ArrayPool<double>.Shared.Rent(_padded * ChunkRows);
        try
        {
            for (int start = 0; start < rows; start += ChunkRows)
            {
                int take = Math.Min(ChunkRows, rows - start);
                Transpose(activations.Slice(start * Features, take * Features), take, chunk);
                if (_padded >= ParallelFeatures)
                {
                    Parallel.For(0, _padded / Tile, tileRow => AddTileRow(chunk, tileRow * Tile));
                }
                else
                {
                    for (int i0 = 0; i0 < _padded; i0 += Tile)
                    {
                        AddTileRow(chunk, i0);
                    }
                }
            }
        }
        finally
        {
            ArrayPool<double>.Shared.Return(chunk);
        }

        Rows += rows;
    }

    /// <summary>Adds another accumulator's rows to this one, as if they had been added here.</summary>
    /// <param name="other">The other accumulator; it is not changed.</param>
    /// <exception cref="ArgumentNullException"><paramref name="other"/> is <see langword="null"/>.</exception>
    /// <exception cref="ArgumentException">The feature counts differ.</exception>
    public void Merge(HessianAccumulator other)
    {
        ArgumentNullException.ThrowIfNull(other);
        if (other.Features != Features)
        {
            throw new ArgumentException(Invariant($"Cannot merge an accumulator of {other.Features} features into one of {Features}."), nameof(other));
        }

        TensorPrimitives.Add(_sum, other._sum, _sum);

        Rows += other.Rows;
    }

    /// <summary>Gets the Hessian <c>H = (2 / n) Σ x xᵀ</c> as a new K×K row-major symmetric matrix; all zero while no rows have been added.</summary>
    /// <returns>The matrix, <see cref="Features"/> × <see cref="Features"/> values.</returns>
    public double[] ToMatrix()
    {
        int k = Features;
        double[] matrix = new double[(long)k * k];
        double factor = Rows == 0 ? 0 : 2.0 / Rows;
        for (int i = 0; i < k; i++)
        {
            for (int j = 0; j <= i; j++)
            {
                double h = _sum[((long)i * _padded) + j] * factor;
                matrix[((long)i * k) + j] = h;
                matrix[((long)j * k) + i] = h;
            }
        }

        return matrix;
    }

    /// <summary>Writes rows [0, take) of a row-major chunk as a feature-major double block, zero-padding to <see cref="ChunkRows"/> rows and the padded feature count.</summary>
    private void Transpose(ReadOnlySpan<float> rows, int take, Span<double> chunk)
    {
        chunk[..(_padded * ChunkRows)].Clear();
        int k = Features;
        for (int r = 0; r < take; r++)
        {
            ReadOnlySpan<float> row = rows.Slice(r * k, k);
            for (int f = 0; f < k; f++)
            {
                chunk[(f * ChunkRows) + r] = row[f];
            }
        }
    }

    /// <summary>
    /// Adds one row of lower-triangle tiles of XᵀX (rows [i0, i0 + 4), columns [0, i0 + 4)) for a transposed chunk: the 16
    /// SIMD dot products of a tile share their loads. Tile rows write disjoint rows of the sum, so they can run in parallel.
    /// </summary>
    private void AddTileRow(double[] chunk, int i0)
    {
        int width = Vector<double>.Count;
        ref double x = ref MemoryMarshal.GetArrayDataReference(chunk);
        ref double a0 = ref Unsafe.Add(ref x, i0 * ChunkRows);
        ref double a1 = ref Unsafe.Add(ref a0, ChunkRows);
        ref double a2 = ref Unsafe.Add(ref a1, ChunkRows);
        ref double a3 = ref Unsafe.Add(ref a2, ChunkRows);
        for (int j0 = 0; j0 <= i0; j0 += Tile)
        {
            ref double b0 = ref Unsafe.Add(ref x, j0 * ChunkRows);
            ref double b1 = ref Unsafe.Add(ref b0, ChunkRows);
            ref double b2 = ref Unsafe.Add(ref b1, ChunkRows);
            ref double b3 = ref Unsafe.Add(ref b2, ChunkRows);
            Vector<double> s00 = default, s01 = default, s02 = default, s03 = default;
            Vector<double> s10 = default, s11 = default, s12 = default, s13 = default;
            Vector<double> s20 = default, s21 = default, s22 = default, s23 = default;
            Vector<double> s30 = default, s31 = default, s32 = default, s33 = default;
            for (int r = 0; r < ChunkRows; r += width)
            {
                Vector<double> v0 = Vector.LoadUnsafe(ref b0, (nuint)r), v1 = Vector.LoadUnsafe(ref b1, (nuint)r);
                Vector<double> v2 = Vector.LoadUnsafe(ref b2, (nuint)r), v3 = Vector.LoadUnsafe(ref b3, (nuint)r);
                Vector<double> u = Vector.LoadUnsafe(ref a0, (nuint)r);
                s00 = Vector.FusedMultiplyAdd(u, v0, s00);
                s01 = Vector.FusedMultiplyAdd(u, v1, s01);
                s02 = Vector.FusedMultiplyAdd(u, v2, s02);
                s03 = Vector.FusedMultiplyAdd(u, v3, s03);
                u = Vector.LoadUnsafe(ref a1, (nuint)r);
                s10 = Vector.FusedMultiplyAdd(u, v0, s10);
                s11 = Vector.FusedMultiplyAdd(u, v1, s11);
                s12 = Vector.FusedMultiplyAdd(u, v2, s12);
                s13 = Vector.FusedMultiplyAdd(u, v3, s13);
                u = Vector.LoadUnsafe(ref a2, (nuint)r);
                s20 = Vector.FusedMultiplyAdd(u, v0, s20);
                s21 = Vector.FusedMultiplyAdd(u, v1, s21);
                s22 = Vector.FusedMultiplyAdd(u, v2, s22);
                s23 = Vector.FusedMultiplyAdd(u, v3, s23);
                u = Vector.LoadUnsafe(ref a3, (nuint)r);
                s30 = Vector.FusedMultiplyAdd(u, v0, s30);
                s31 = Vector.FusedMultiplyAdd(u, v1, s31);
                s32 = Vector.FusedMultiplyAdd(u, v2, s32);
                s33 = Vector.FusedMultiplyAdd(u, v3, s33);
            }

            Span<double> s = _sum.AsSpan((i0 * _padded) + j0);
            StoreRow(s, s00, s01, s02, s03);
            StoreRow(s[_padded..], s10, s11, s12, s13);
            StoreRow(s[(2 * _padded)..], s20, s21, s22, s23);
            StoreRow(s[(3 * _padded)..], s30, s31, s32, s33);
        }
    }

    private static void StoreRow(Span<double> row, Vector<double> c0, Vector<double> c1, Vector<double> c2, Vector<double> c3)
    {
        row[0] += Vector.Sum(c0);
        row[1] += Vector.Sum(c1);
        row[2] += Vector.Sum(c2);
        row[3] += Vector.Sum(c3);
    }
}
