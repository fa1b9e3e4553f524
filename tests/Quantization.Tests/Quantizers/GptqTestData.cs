namespace Quantization.Tests.Quantizers;

/// <summary>Random inputs and weights for the GPTQ tests, and the layer output error they are judged by.</summary>
internal static class GptqTestData
{
    /// <summary>Standard normal floats (Box-Muller).</summary>
    public static float[] Gaussian(Random random, int count)
    {
        float[] values = new float[count];
        for (int i = 0; i < count; i++)
        {
            double u = 1 - random.NextDouble();
            values[i] = (float)(Math.Sqrt(-2 * Math.Log(u)) * Math.Cos(2 * Math.PI * random.NextDouble()));
        }

        return values;
    }

    /// <summary>
    /// Correlated activations X = Z·A (Z standard normal, rows × K; A a random K × K mixing), with a few outlier features
    /// scaled by 20 as in transformer activations.
    /// </summary>
    public static float[] CorrelatedInputs(Random random, int rows, int k, float[] mixing)
    {
        float[] z = Gaussian(random, rows * k);
        float[] x = new float[rows * k];
        for (int r = 0; r < rows; r++)
        {
            for (int j = 0; j < k; j++)
            {
                double sum = 0;
                for (int t = 0; t < k; t++)
                {
                    sum += z[(r * k) + t] * mixing[(t * k) + j];
                }

                x[(r * k) + j] = (float)(j % 29 == 3 ? 20 * sum : sum);
            }
        }

        return x;
    }

    /// <summary>A mixing matrix for <see cref="CorrelatedInputs"/>: identity plus a dense random part, so inputs are strongly correlated.</summary>
    public static float[] Mixing(Random random, int k)
    {
        float[] mixing = Gaussian(random, k * k);
        for (int i = 0; i < k; i++)
        {
            mixing[(i * k) + i] += 1;
        }

        return mixing;
    }

    /// <summary>‖X (W − Ŵ)ᵀ‖² over all rows and outputs, for a weight of shape [N, K] (input axis 1) or [K, N] (input axis 0).</summary>
    public static double OutputError(float[] x, int rows, float[] weight, float[] dequantized, int[] shape, int inputAxis)
    {
        int k = shape[inputAxis], n = shape[1 - inputAxis];
        double[] delta = new double[n * k];
        for (int o = 0; o < n; o++)
        {
            for (int i = 0; i < k; i++)
            {
                int index = inputAxis == 1 ? (o * k) + i : (i * n) + o;
                delta[(o * k) + i] = (double)weight[index] - dequantized[index];
            }
        }

        double total = 0;
        for (int r = 0; r < rows; r++)
        {
            for (int o = 0; o < n; o++)
            {
                double s = 0;
                for (int i = 0; i < k; i++)
                {
                    s += x[(r * k) + i] * delta[(o * k) + i];
                }

                total += s * s;
            }
        }

        return total;
    }

    /// <summary>
    /// Rows of a Hadamard matrix times a diagonal of short-mantissa values, K × K: XᵀX = K·D² exactly, so the Hessian is
    /// diagonal and no error can be compensated.
    /// </summary>
    public static float[] UncorrelatedInputs(int k)
    {
        float[] x = new float[k * k];
        for (int r = 0; r < k; r++)
        {
            for (int c = 0; c < k; c++)
            {
                int sign = (System.Numerics.BitOperations.PopCount((uint)(r & c)) & 1) == 0 ? 1 : -1;
                x[(r * k) + c] = sign * (1 + ((c * 5) % 11)) * 0.25f;
            }
        }

        return x;
    }

    /// <summary>The quantized values as integers, one per element (unpacked for 4-bit types).</summary>
    public static int[] Integers(QuantizedTensor tensor) => tensor.Scheme.Type switch
    {
        QuantizedType.Int8 => [.. tensor.GetInt8Data().ToArray().Select(v => (int)v)],
        QuantizedType.Int4 => [.. tensor.GetInt4Data().Select(v => (int)v)],
        QuantizedType.UInt4 => [.. tensor.GetUInt4Data().Select(v => (int)v)],
        _ => [.. tensor.Data.ToArray().Select(v => (int)v)],
    };
}
