using CsCheck;

namespace Quantization.Tests.Quantizers;

public class HessianAccumulatorTests
{
    /// <summary>Rows, features, activations with outliers, and cut points that split the rows into several Add calls.</summary>
    private static readonly Gen<(int Rows, int Features, float[] X, int[] Cuts)> Cases =
        Gen.Select(Gen.Int[1, 150], Gen.Int[1, 70], Gen.UInt, Gen.Int[0, 5]).Select(t =>
        {
            (int rows, int features, uint seed, int cutCount) = t;
            Random random = new((int)seed);
            float[] x = GptqTestData.Gaussian(random, rows * features);
            for (int i = 0; i < x.Length; i += 13)
            {
                x[i] *= 50;
            }

            int[] cuts = [.. Enumerable.Range(0, cutCount).Select(_ => random.Next(0, rows + 1)).Append(0).Append(rows).Distinct().Order()];
            return (rows, features, x, cuts);
        });

    [Fact]
    public void ToMatrix_EqualsNaiveDoubleSum_InOneCallOrManyOrMerged()
    {
        Cases.Sample(
            (rows, k, x, cuts) =>
            {
                double[] expected = Naive(x, rows, k);

                HessianAccumulator whole = new(k);
                whole.Add(x, [rows, k], "x");
                AssertClose(expected, whole.ToMatrix());
                Assert.Equal(rows, whole.Rows);

                HessianAccumulator pieces = new(k);
                HessianAccumulator merged = new(k);
                for (int c = 0; c + 1 < cuts.Length; c++)
                {
                    float[] part = x[(cuts[c] * k)..(cuts[c + 1] * k)];
                    pieces.Add(part, [1, cuts[c + 1] - cuts[c], k]);
                    HessianAccumulator partial = new(k);
                    partial.Add(part, [cuts[c + 1] - cuts[c], k]);
                    merged.Merge(partial);
                }

                AssertClose(expected, pieces.ToMatrix());
                AssertClose(expected, merged.ToMatrix());
                Assert.Equal(rows, pieces.Rows);
                Assert.Equal(rows, merged.Rows);
            },
            iter: 200);
    }

    [Fact]
    public void Add_OneRowAtATime_WithRankOneShapes_MatchesNaive()
    {
        const int K = 37;
        float[] x = GptqTestData.Gaussian(new Random(3), 11 * K);
        HessianAccumulator accumulator = new(K);
        Assert.All(accumulator.ToMatrix(), h => Assert.Equal(0, h));
        for (int r = 0; r < 11; r++)
        {
            accumulator.Add(x.AsSpan(r * K, K), [K]);
        }

        accumulator.Add([], [0, K]);
        Assert.Equal(11, accumulator.Rows);
        AssertClose(Naive(x, 11, K), accumulator.ToMatrix());
    }

    [Fact]
    public void Add_RejectsBadShapesAndNonFiniteValues_NamingTheTensor_WithoutChangingTheSum()
    {
        HessianAccumulator accumulator = new(4);
        accumulator.Add([1, 2, 3, 4], [1, 4]);
        double[] before = accumulator.ToMatrix();

        ArgumentException lastAxis = Assert.Throws<ArgumentException>(() => accumulator.Add(new float[8], [4, 2], "layer0.input"));
        Assert.Contains("'layer0.input'", lastAxis.Message, StringComparison.Ordinal);
        ArgumentException count = Assert.Throws<ArgumentException>(() => accumulator.Add(new float[7], [2, 4], "layer0.input"));
        Assert.Contains("'layer0.input'", count.Message, StringComparison.Ordinal);
        Assert.Equal("activations", count.ParamName);
        Assert.Throws<ArgumentException>(() => accumulator.Add(new float[4], []));
        Assert.Throws<ArgumentException>(() => accumulator.Add(new float[4], [-1, 4]));

        float[] bad = [1, 2, 3, 4, 5, 6, float.PositiveInfinity, 8];
        NonFiniteValueException error = Assert.Throws<NonFiniteValueException>(() => accumulator.Add(bad, [2, 4], "layer0.input"));
        Assert.Equal("layer0.input", error.TensorName);
        Assert.Equal(6, error.Index);
        bad[6] = 7;
        bad[5] = float.NaN;
        NonFiniteValueException nan = Assert.Throws<NonFiniteValueException>(() => accumulator.Add(bad, [2, 4], "layer0.input"));
        Assert.Equal("layer0.input", nan.TensorName);
        Assert.Equal(5, nan.Index);
        Assert.Contains("'layer0.input'", nan.Message, StringComparison.Ordinal);

        Assert.Equal(1, accumulator.Rows);
        Assert.Equal(before, accumulator.ToMatrix());
        Assert.Throws<ArgumentOutOfRangeException>(() => new HessianAccumulator(0));
        Assert.Throws<ArgumentException>(() => accumulator.Merge(new HessianAccumulator(5)));
        Assert.Throws<ArgumentNullException>(() => accumulator.Merge(null!));
    }

    [Fact]
    public void Add_6000TokensOf1536Features_InBatches_MatchesDirectSums()
    {
        // A MiniLM-sized layer (performance belongs in benchmarks; this checks the blocked, parallel path at scale).
        const int Rows = 6000, K = 1536;
        float[] x = GptqTestData.Gaussian(new Random(1), Rows * K);
        HessianAccumulator accumulator = new(K);
        for (int batch = 0; batch < Rows / 120; batch++)
        {
            accumulator.Add(x.AsSpan(batch * 120 * K, 120 * K), [1, 120, K]);
        }

        Assert.Equal(Rows, accumulator.Rows);

        // Spot-check a few entries against a direct sum.
        double[] h = accumulator.ToMatrix();
        foreach ((int i, int j) in new[] { (0, 0), (1535, 7), (700, 701), (1535, 1535) })
        {
            double sum = 0;
            for (int r = 0; r < Rows; r++)
            {
                sum += (double)x[(r * K) + i] * x[(r * K) + j];
            }

            Assert.Equal(2 * sum / Rows, h[(i * K) + j], 1e-9 * Math.Max(1, Math.Abs(h[(i * K) + i])));
            Assert.Equal(h[(i * K) + j], h[(j * K) + i]);
        }
    }

    private static double[] Naive(float[] x, int rows, int k)
    {
        double[] h = new double[k * k];
        for (int r = 0; r < rows; r++)
        {
            for (int i = 0; i < k; i++)
            {
                for (int j = 0; j < k; j++)
                {
                    h[(i * k) + j] += (double)x[(r * k) + i] * x[(r * k) + j];
                }
            }
        }

        for (int i = 0; i < h.Length; i++)
        {
            h[i] *= 2.0 / rows;
        }

        return h;
    }

    private static void AssertClose(double[] expected, double[] actual)
    {
        Assert.Equal(expected.Length, actual.Length);
        double scale = expected.Max(Math.Abs);
        for (int i = 0; i < expected.Length; i++)
        {
            Assert.True(Math.Abs(expected[i] - actual[i]) <= 1e-12 * scale, $"entry {i}: {expected[i]} vs {actual[i]}");
        }
    }
}
